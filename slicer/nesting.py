"""The FFN widths a MatFormer-trained layer nests, shared by everything that chooses widths: the demo's slice
designer and the search (`matslice search`), so both offer exactly the granularity the parent was trained at."""

from __future__ import annotations

from collections.abc import Sequence


def nested_widths(width: int) -> tuple[int, ...]:
    """The FFN widths a MatFormer layer of `width` nests: its first k/8 units, k = 1..8.

    Why eighths: Gemma 3n E4B's 16384-wide layers were trained at multiples of 2048 (Google's table uses
    2_048 * 4 and 2_048 * 8; our presets 2_048 * 2), and the nano stand-in at 1/4, 1/2 and 1, all on this
    grid. A layer not divisible by 8 (an odd, already sliced parent) offers its own width only.
    """
    steps = [width * k // 8 for k in range(1, 9) if width * k % 8 == 0]
    return tuple(sorted(set(steps) | {width}))


def snap(width: int, choices: Sequence[int]) -> int:
    """The nested width nearest `width` (ties go to the narrower one: a design never grows by snapping)."""
    return min(choices, key=lambda c: (abs(c - width), c))
