"""Slicing speed and memory on a synthetic checkpoint with E4B's real shapes.

Slicing streams byte ranges, so it should cost about what copying the bytes it writes costs, and its
peak memory should stay near one read chunk, far below the largest tensor. Each run happens in a fresh
process so that peak RSS is the slicer's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.synthetic import synthetic_text_config, write_synthetic


def _timed(command: list[str], rss_limit: int | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process, measured on that process alone.

    With `rss_limit`, the child is killed once its resident memory passes it (rather than letting the
    kernel's OOM killer pick a victim on a shared machine), and CalledProcessError is raised.
    """
    os.sync()  # start clean: no run may pay for the previous run's dirty pages
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if rss_limit is not None:
        threading.Thread(target=_watch, args=(process, rss_limit), daemon=True).start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return seconds, usage.ru_maxrss * 1024


def _watch(process: subprocess.Popen, limit: int) -> None:
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            rss = next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                       if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return
        if rss > limit:
            process.kill()
            return
        time.sleep(0.2)


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
        seconds, peak = _timed([sys.executable, "-m", "matslice", "slice", str(parent), str(child),
                                "--preset", preset, "--modalities", "text"])
        slice_runs.append(seconds)
        rss = max(rss, peak)
        copy_runs.append(_timed(_copy_command(child, copy))[0])  # the same bytes the slice wrote
        seconds, _ = _timed(_copy_command(child, copy.with_name("copy2")))
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
