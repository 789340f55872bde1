"""The machine a search ran on, in words: seconds per trial mean little without the CPU or GPU and threads."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or platform.machine())


def describe(device: str, threads: int, workers: int) -> dict[str, object]:
    """CPU model and core count, the GPU when one measures, and how the work was split."""
    found: dict[str, object] = {"cpu": cpu_name(), "cpu_cores": os.cpu_count(), "device": device,
                                "threads_per_worker": threads, "workers": workers}
    if device == "cuda":
        import torch

        found["gpu"] = torch.cuda.get_device_name(0)
    return found


def in_words(found: dict[str, object]) -> str:
    where = found.get("gpu") or f"{found['cpu']} ({found['cpu_cores']} cores)"
    return f"{where}, {found['workers']} worker(s) x {found['threads_per_worker']} thread(s)"
