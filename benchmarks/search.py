"""`matslice search` on the default (nano) model: how many trials a minute one worker gets through, and how
many slices the front keeps. Text only, under three quarters of the parent's q4 bundle, 48 trials, seed 0."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gemma3n.config import load_config
from search.space import space_for
from search.study import Request, run_search
from slicer.plan import SliceSpec
from slicer.report import folder_tensors

TRIALS = 48
BUDGET_FRACTION = 0.75
OPTIONS = {"block_size": 32, "symmetric": True, "max_file_bytes": 1_500_000_000, "max_tensor_bytes": 256 << 20}


def bench_search() -> dict[str, Any]:
    from standins.default import default_checkpoint

    model = default_checkpoint()
    base = SliceSpec(modalities=("text",))
    space = space_for(load_config(model), model, base, "q4", OPTIONS, folder_tensors(model))
    budget = int(BUDGET_FRACTION * space.bundle_bytes(replace(base)))
    result = run_search(Request(model, budget, "q4", OPTIONS, base, trials=TRIALS, seed=0))
    return {key: result[key] for key in ("budget_bytes", "parent_bytes", "trials", "measured", "over_budget",
                                         "repeats", "hardware", "load_seconds", "seconds_per_trial",
                                         "trials_per_minute")} | {
        "front_size": len(result["front"]),
        "front": [{k: e[k] for k in ("name", "bytes", "kl", "top1", "command")} for e in result["front"]],
    }
