"""A search is reproducible (same seed and inputs, same front, however many workers measure), rejects what
exceeds the budget without measuring it, and its numbers are `matslice eval`'s on the written slice."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gemma3n.config import load_config
from search.space import space_for
from search.study import Request, run_search
from slicer.plan import SliceSpec
from slicer.report import folder_tensors

pytest.importorskip("optuna")
OPTIONS = {"block_size": 32, "symmetric": True, "max_file_bytes": 1_500_000_000, "max_tensor_bytes": 256 << 20}


def _request(model: Path, **changes: Any) -> Request:
    space = space_for(load_config(model), model, SliceSpec(), "q4", OPTIONS, folder_tensors(model))
    smallest = space.smallest()[1]
    parent = space.bundle_bytes(SliceSpec())
    fields = {"budget": (smallest + parent) // 2, "dtype": "q4", "bundle_options": OPTIONS, "trials": 12, "batch": 4,
              "window": 128, "seed": 3} | changes
    return Request(model, **fields)


def _front(result: dict[str, Any]) -> list[tuple]:
    return [(e["layers_to_skip"], e["ffn_dims"], e["bytes"], e["kl"], e["top1"], e["trial"]) for e in result["front"]]


@pytest.fixture(scope="module")
def searched(tiny_multimodal: Path) -> dict[str, Any]:
    return run_search(_request(tiny_multimodal))


def test_same_seed_same_front(searched: dict[str, Any], tiny_multimodal: Path) -> None:
    again = run_search(_request(tiny_multimodal))
    assert _front(again) == _front(searched)
    assert searched["measured"] + searched["over_budget"] + searched["repeats"] == 12
    assert searched["over_budget"] > 0 and searched["front"]
    assert all(e["bytes"] <= searched["budget_bytes"] for e in searched["front"])
    kls = [e["kl"] for e in searched["front"]]
    assert kls == sorted(kls, reverse=True) and [e["bytes"] for e in searched["front"]] == sorted(
        e["bytes"] for e in searched["front"])
    assert searched["hardware"]["cpu"] and searched["seconds_per_trial"] > 0


def test_workers_do_not_change_the_front(searched: dict[str, Any], tiny_multimodal: Path) -> None:
    parallel = run_search(_request(tiny_multimodal, workers=2))
    assert parallel["hardware"]["workers"] == 2
    assert _front(parallel) == _front(searched)
    pids = {where["pid"] for where in parallel["measured_by"]}
    assert pids and os.getpid() not in pids  # measured in the spawned workers, not here


def test_a_front_entry_measures_as_matslice_eval_does_on_its_written_slice(searched: dict[str, Any],
                                                                          tiny_multimodal: Path,
                                                                          tmp_path: Path) -> None:
    from evaluation.compare import evaluate
    from search.calibration import PASSAGE
    from slicer.checkpoint import slice_checkpoint
    from slicer.plan import make_plan

    entry = searched["front"][0]
    spec = SliceSpec(tuple(entry["layers_to_skip"]), tuple(entry["ffn_dims"]))
    child = slice_checkpoint(tiny_multimodal, tmp_path / "child", make_plan(load_config(tiny_multimodal), spec),
                             progress=False)
    text = evaluate(child, tiny_multimodal, text=PASSAGE, window=128)["text"]
    assert text["positions"] == searched["calibration_positions"]
    assert text["kl_mean"] == pytest.approx(entry["kl"], abs=1e-5)
    assert text["top1_agreement"] == pytest.approx(entry["top1"], abs=1e-9)
