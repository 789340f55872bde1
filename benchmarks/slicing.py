"""Slicing speed and memory on a synthetic checkpoint with E4B's real shapes.

Slicing streams byte ranges, so it should cost about what copying the bytes it writes costs, and its
peak memory should stay near one read chunk, far below the largest tensor. Each run happens in a fresh
process so that peak RSS is the slicer's own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.process import timed
from benchmarks.synthetic import synthetic_text_config, write_synthetic


def _copy_command(source: Path, target: Path) -> list[str]:
    code = ("import shutil, sys, pathlib; s, t = map(pathlib.Path, sys.argv[1:3]); t.mkdir();"
            "[shutil.copyfile(p, t / p.name) for p in sorted(s.glob('*.safetensors'))]")
    return [sys.executable, "-c", code, str(source), str(target)]


def bench_slicing(work: Path, preset: str = "E2B", vocab_divisor: int = 4, repeats: int = 2) -> dict:
    parent = work / "parent"
    if not (parent / "config.json").exists():
        print(f"writing synthetic E4B-shaped checkpoint (vocabularies / {vocab_divisor}) to {parent}")
        write_synthetic(parent, synthetic_text_config(vocab_divisor))
    child, copy = work / "child", work / "copy"
    parent_bytes = sum(p.stat().st_size for p in parent.glob("*.safetensors"))
    slice_runs, copy_runs, rss = [], [], 0
    for _ in range(repeats):
        for folder in (child, copy):
            shutil.rmtree(folder, ignore_errors=True)
        seconds, peak = timed([sys.executable, "-m", "matslice", "slice", str(parent), str(child),
                                "--preset", preset, "--modalities", "text"])
        slice_runs.append(seconds)
        rss = max(rss, peak)
        copy_runs.append(timed(_copy_command(child, copy))[0])  # the same bytes the slice wrote
        seconds, _ = timed(_copy_command(child, copy.with_name("copy2")))
        shutil.rmtree(copy.with_name("copy2"))
        copy_runs.append(seconds)
    child_bytes = sum(p.stat().st_size for p in child.glob("*.safetensors"))
    return {
        "preset": preset,
        "parent_bytes": parent_bytes,
        "child_bytes": child_bytes,
        "seconds": min(slice_runs),
        "copy_seconds": min(copy_runs),
        "time_ratio_to_copy": min(slice_runs) / min(copy_runs),
        "peak_rss_bytes": rss,
        "largest_tensor_bytes": 2 * synthetic_text_config(vocab_divisor)["vocab_size_per_layer_input"] * 35 * 256,
    }


def bench_plan(repeats: int = 5) -> dict:
    """`matslice plan --json` on the full-size E4B config, as a user runs it (a fresh process)."""
    command = [sys.executable, "-m", "matslice", "plan", "--preset", "E2B", "--json"]
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        runs.append(time.perf_counter() - start)
    return {"seconds": min(runs)}
