"""The search space is valid by construction and prices a slice with the plan's own arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gemma3n.config import load_config
from matslice.cli import main
from search.front import Candidate, pareto_front
from search.space import Choice, Space, space_for
from slicer.options import spec_options
from slicer.plan import SliceSpec, make_plan
from slicer.report import folder_tensors

OPTIONS = {"block_size": 32, "symmetric": True, "max_file_bytes": 1_500_000_000, "max_tensor_bytes": 256 << 20}


@pytest.fixture(scope="module")
def space(tiny_multimodal: Path) -> Space:
    return space_for(load_config(tiny_multimodal), tiny_multimodal, SliceSpec(), "q4", OPTIONS,
                     folder_tensors(tiny_multimodal))


def test_repair_keeps_every_store_a_kept_layer_reads(space: Space) -> None:
    # tiny: layers 5-7 read layer 3's KV cache (sliding); layer 4 is the full-attention store
    widths = tuple(space.config.text.intermediate_size)
    repaired = space.repair(Choice(frozenset({3, 5, 6}), widths))
    assert repaired.skipped == {5, 6}  # 7 is kept, so 3 is
    assert space.repair(Choice(frozenset({3, 5, 6, 7}), widths)).skipped == {3, 5, 6, 7}
    assert space.repair(Choice(frozenset(range(8)), widths)).skipped == set(range(1, 8))  # one layer stays
    for skipped in ({0, 1, 2}, {3, 4, 5, 6, 7}, {1, 3, 7}):
        make_plan(space.config, space.spec(space.repair(Choice(frozenset(skipped), widths))))  # never refused


def test_widths_are_the_nested_ones_and_full_widths_stay_implicit(space: Space) -> None:
    assert space.widths(0) == (16, 32, 48, 64, 80, 96, 112, 128)
    assert space.spec(space.parent_choice()) == SliceSpec()
    assert space.spec(space.narrowest_choice()).ffn_dims == (16, 16, 12, 12, 16, 8, 8, 8)


def test_bytes_are_what_matslice_plan_prints(space: Space, tiny_multimodal: Path, capsys) -> None:
    spec = space.spec(space.repair(Choice(frozenset({1, 6}), (64, 128, 48, 96, 128, 32, 64, 16))))
    main(["plan", str(tiny_multimodal), *spec_options(spec), "--dtype", "q4", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert space.bundle_bytes(spec) == printed["bundle"]["bytes"]["q4"]["all"]


def test_the_smallest_slice_is_no_bigger_than_any_other(space: Space) -> None:
    spec, size = space.smallest()
    assert len(spec.layers_to_skip) == space.layers - 1
    assert size < space.bundle_bytes(space.spec(space.narrowest_choice()))
    assert size < space.bundle_bytes(space.spec(Choice(frozenset(range(1, 8)) - {3},
                                                       space.narrowest_choice().widths)))


def test_pareto_front() -> None:
    spec = SliceSpec()
    found = [Candidate(spec, b, kl, 0.5, trial, 0.1) for trial, (b, kl) in enumerate(
        [(10, 0.5), (12, 0.3), (11, 0.6), (12, 0.2), (15, 0.2), (20, 0.0), (10, 0.5)])]
    assert [(c.bytes, c.kl, c.trial) for c in pareto_front(found)] == [(10, 0.5, 0), (12, 0.2, 3), (20, 0.0, 5)]
