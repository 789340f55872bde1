"""Measuring a candidate: its mean KL and top-1 agreement against the parent, computed inside the parent.

Each worker (this process, a local process, or a Ray actor) loads the parent once, scores the parent's own
next-token distributions on the calibration windows once, and then measures every candidate it is given by
masking (`slicer.masked`): no checkpoint is written per trial. The numbers are `matslice eval`'s
(evaluation.metrics.TextTally over the same windows), so a front entry and `matslice eval` of its written
slice agree. torch runs on a fixed number of threads per worker, so a candidate's numbers do not depend on how
many workers share the machine.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import TextTally, log_softmax
from gemma3n.config import load_config
from slicer.plan import SliceSpec, make_plan


@dataclass(frozen=True)
class Setup:
    """What every worker needs to measure the same way: the parent's folder and the calibration windows."""

    model: str
    windows: tuple[tuple[int, ...], ...]
    device: str = "cpu"
    threads: int = 1


class Evaluator:
    """One loaded parent, patched for masking, with its own log-probabilities on the calibration windows."""

    def __init__(self, setup: Setup) -> None:
        import torch
        from transformers import AutoModelForCausalLM, Gemma3nForConditionalGeneration

        from slicer.masked import masked_slices

        started = time.perf_counter()
        torch.set_num_threads(setup.threads)
        folder = Path(setup.model)
        self.config = load_config(folder)
        cls = Gemma3nForConditionalGeneration if self.config.multimodal else AutoModelForCausalLM
        self.model = cls.from_pretrained(folder, dtype="auto").to(setup.device).eval()
        self._torch = torch
        self._device = setup.device
        self._stack = ExitStack()
        self._select = self._stack.enter_context(masked_slices(self.model))
        self.windows = [np.array(w, dtype=np.int64) for w in setup.windows]
        self.parent = [self._log_probs(w) for w in self.windows]
        self.load_seconds = time.perf_counter() - started

    def _log_probs(self, ids: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            logits = self.model(input_ids=torch.from_numpy(ids)[None].to(self._device), use_cache=False).logits[0]
        return log_softmax(logits[:-1].float().cpu().numpy())

    def measure(self, spec: SliceSpec) -> dict[str, Any]:
        """KL and top-1 of the slice's decoder (layers and widths; the fixed options do not change it)."""
        started = time.perf_counter()
        self._select(make_plan(self.config, SliceSpec(spec.layers_to_skip, spec.ffn_dims)))
        tally = TextTally()
        for window, parent in zip(self.windows, self.parent, strict=True):
            tally.add(parent, self._log_probs(window), window[1:])
        self._select(None)
        found = tally.summary()
        return {"kl": found["kl_mean"], "top1": found["top1_agreement"], "perplexity": found["variant_perplexity"],
                "parent_perplexity": found["parent_perplexity"], "positions": found["positions"],
                "seconds": time.perf_counter() - started, "worker": worker_identity()}

    def close(self) -> None:
        self._stack.close()


def worker_identity() -> dict[str, Any]:
    """Where this process runs: its host and pid, and its Ray node id inside a Ray worker (None elsewhere), so a
    search's result shows which process measured each slice."""
    ray = sys.modules.get("ray")
    node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
    return {"host": socket.gethostname(), "pid": os.getpid(), "ray_node": node}


# --- A worker process's evaluator (concurrent.futures calls module functions) ------------------------------------
_WORKER: Evaluator | None = None


def start_worker(setup: Setup) -> None:
    """Process-pool initializer: load the parent once per worker process."""
    global _WORKER
    _WORKER = Evaluator(setup)


def measure_in_worker(spec: SliceSpec) -> dict[str, Any]:
    if _WORKER is None:
        raise RuntimeError("start_worker was not called in this process")
    return _WORKER.measure(spec)
