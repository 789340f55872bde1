"""Greedy ids compared across runtimes: the number of steps compared, where they part, and when a tie excuses it."""

from __future__ import annotations

from evaluation.metrics import MIN_EQUAL_BEFORE_TIE, NEAR_TIE, IdsMatch, ids_match

WIDE, TIE = [1.0] * 8, [NEAR_TIE / 2] * 8


def test_equal_ids_report_every_step() -> None:
    assert ids_match([5, 6, 7], [5, 6, 7], WIDE) == IdsMatch(True, 3, None, False)
    assert ids_match([5, 6], [5, 6, 7], WIDE) == IdsMatch(False, 2, None, False)  # one decode stopped early


def test_a_difference_fails_unless_a_near_tie_comes_after_enough_equal_steps() -> None:
    assert ids_match([5, 9, 7], [5, 6, 7], WIDE) == IdsMatch(False, 2, 1, False)
    assert ids_match([9, 6], [5, 6], TIE) == IdsMatch(False, 1, 0, False)  # a tie at the first step excuses nothing
    late = MIN_EQUAL_BEFORE_TIE
    got, want = [1] * late + [9, 9], [1] * late + [2, 2]
    assert ids_match(got, want, TIE) == IdsMatch(True, late + 1, late, True)
    assert ids_match(got, want, WIDE) == IdsMatch(False, late + 1, late, False)
    assert "near tie" in ids_match(got, want, TIE).describe()
