"""The search loop: optuna proposes slices, the byte budget rejects, the workers measure, optuna learns.

Two objectives, both minimised: the bundle's bytes (predicted exactly, `search.space`) and the mean KL against
the parent on the calibration text (measured, `search.measure`). optuna's multi-objective TPE (seeded,
multivariate, constant liar for batches) is driven by ask/tell: a batch of `batch` trials is asked, the
admissible ones are measured in parallel, and all are told in ask order. The batch size, not the number of
workers, decides what the sampler sees, so one seed gives one front whether 1 or 16 workers measure.

A candidate over the budget is never measured: it is told with an infinite KL and a positive constraint
violation (its bytes over the budget), which TPE's constraint handling ranks below every admissible slice.
The same slice asked twice is measured once.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma3n.config import load_config
from gemma3n.errors import UserError
from gemma3n.units import human_bytes
from search.calibration import calibration_windows, read_calibration
from search.front import Candidate, front_entries, pareto_front
from search.hardware import describe
from search.measure import Setup, worker_identity
from search.space import Choice, Space, space_for
from search.workers import open_pool
from slicer.options import spec_options
from slicer.plan import SliceSpec
from slicer.report import folder_tensors


@dataclass(frozen=True)
class Request:
    """Everything a search is asked, checked by the command line before it gets here."""

    model: Path
    budget: int
    dtype: str
    bundle_options: dict[str, Any]
    base: SliceSpec = SliceSpec()
    calibration: str | None = None  # a file; None: the built-in passage
    trials: int = 48
    seed: int = 0
    batch: int = 8
    window: int = 256
    device: str = "cpu"
    threads: int = 1
    workers: int | None = None
    ray: str | None = None


@dataclass
class _Seen:
    """Trials so far: measured candidates by slice, and the counts a report gives."""

    measured: dict[SliceSpec, Candidate] = field(default_factory=dict)
    over_budget: int = 0
    repeats: int = 0


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("matslice search needs optuna: pip install 'matslice[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _choice(trial: Any, space: Space) -> Choice:
    skipped = frozenset(i for i in range(space.layers) if trial.suggest_categorical(f"skip_{i}", [False, True]))
    widths = tuple(trial.suggest_categorical(f"width_{i}", list(space.widths(i))) for i in range(space.layers))
    return space.repair(Choice(skipped, widths))


def _params(choice: Choice, space: Space) -> dict[str, Any]:
    return {f"skip_{i}": i in choice.skipped for i in range(space.layers)} | {
        f"width_{i}": choice.widths[i] for i in range(space.layers)}


def _too_small(request: Request, space: Space) -> None:
    spec, size = space.smallest()
    if request.budget < size:
        raise UserError(
            f"no slice of {request.model} fits in {request.budget:,} bytes ({human_bytes(request.budget)}) at "
            f"{request.dtype}: the smallest, one layer at its narrowest FFN "
            f"({' '.join(spec_options(spec)[:4])}), is {size:,} bytes ({human_bytes(size)})")


def _windows(request: Request) -> tuple[tuple[int, ...], ...]:
    from transformers import AutoTokenizer

    text = read_calibration(request.calibration)
    tokenizer = AutoTokenizer.from_pretrained(request.model)
    source = request.calibration or "the built-in calibration passage"
    return tuple(map(tuple, calibration_windows(tokenizer, text, request.window, source)))


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA GPU here; use --device cpu")


def run_search(request: Request) -> dict[str, Any]:
    """Search the slices of `request.model` under the byte budget; the front and how it was found, JSON-ready."""
    config = load_config(request.model)
    tensors = folder_tensors(request.model)
    space = space_for(config, request.model, request.base, request.dtype, request.bundle_options, tensors)
    _too_small(request, space)
    optuna = _optuna()
    windows = _windows(request)
    _check_device(request.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=request.seed, multivariate=True, constant_liar=True,
                                             n_startup_trials=min(10, request.trials))
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for anchor in (space.parent_choice(), space.narrowest_choice()):  # the two ends of the size range
        study.enqueue_trial(_params(anchor, space))
    started = time.perf_counter()
    pool = open_pool(Setup(str(request.model), windows, request.device, request.threads), request.workers,
                     request.ray)
    seen, sizes = _Seen(), {}
    driver = worker_identity()  # while the pool is open: a Ray driver has its node id only until it shuts Ray down
    try:
        load_seconds = pool.load_seconds
        measure_started = time.perf_counter()
        measured_by: list[dict[str, Any]] = []  # which process measured each fresh slice, in measuring order
        for first in range(0, request.trials, request.batch):
            trials = [study.ask() for _ in range(min(request.batch, request.trials - first))]
            specs = [space.spec(_choice(trial, space)) for trial in trials]
            for spec in specs:
                if spec not in sizes:
                    sizes[spec] = space.bundle_bytes(spec)
            fresh = list(dict.fromkeys(s for s in specs if sizes[s] <= request.budget and s not in seen.measured))
            for spec, found in zip(fresh, pool.measure(fresh), strict=True):
                number = trials[specs.index(spec)].number
                measured_by.append({"trial": number, **found["worker"]})
                seen.measured[spec] = Candidate(spec, sizes[spec], found["kl"], found["top1"], number,
                                                found["seconds"])
            for trial, spec in zip(trials, specs, strict=True):
                trial.set_constraint("over_budget", float(sizes[spec] - request.budget))
                if sizes[spec] > request.budget:
                    seen.over_budget += 1
                    study.tell(trial, (sizes[spec], math.inf))
                    continue
                found = seen.measured[spec]
                seen.repeats += found.trial != trial.number
                study.tell(trial, (found.bytes, found.kl))
        measure_seconds = time.perf_counter() - measure_started
        workers = pool.workers
    finally:
        pool.close()
    front = pareto_front(list(seen.measured.values()))
    measured = len(seen.measured)
    parent_bytes = space.bundle_bytes(space.spec(space.parent_choice()))
    return {
        "model": str(request.model),
        "budget_bytes": request.budget,
        "dtype": request.dtype,
        "bundle_options": request.bundle_options,
        "seed": request.seed,
        "calibration": request.calibration or "built-in passage (search/calibration.py)",
        "calibration_positions": sum(len(w) - 1 for w in windows),
        "parent_bytes": parent_bytes,
        "smallest_bytes": space.smallest()[1],
        "trials": request.trials,
        "measured": measured,
        "over_budget": seen.over_budget,
        "repeats": seen.repeats,
        "hardware": describe(request.device, request.threads, workers),
        "load_seconds": load_seconds,
        "seconds": time.perf_counter() - started,
        "measure_seconds": measure_seconds,
        "seconds_per_trial": sum(c.seconds for c in seen.measured.values()) / max(measured, 1),
        "trials_per_minute": 60 * request.trials / measure_seconds if measure_seconds else None,
        "front": front_entries(front, str(request.model), request.dtype),
        "driver": driver,
        "measured_by": measured_by,
    }
