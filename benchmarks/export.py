"""Export cost on full-size shapes: time, peak RSS and bundle bytes per session and dtype.

A user exports a 26-30 layer E4B variant on a laptop. We write a synthetic checkpoint with exactly the
shapes slicing E4B to a preset (text only) gives (the parent at full vocabulary would not fit this disk
beside it; slicing has its own benchmark) and export it, each export in a fresh process so its peak RSS
is its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.process import timed
from benchmarks.synthetic import synthetic_preset
from web_export.manifest import Manifest

RSS_LIMIT = 21 << 30  # of this machine's 24 GiB: stop an export before the OOM killer picks a victim


def bench_export(work: Path, preset: str, dtype: str = "q4", vocab_divisor: int = 1) -> dict:
    child = synthetic_preset(work, preset, vocab_divisor)
    out = work / f"bundle-{preset}-{dtype}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "matslice", "export", str(child), str(out), "--dtype", dtype]
    try:
        seconds, rss = timed(command, rss_limit=RSS_LIMIT)
    except subprocess.CalledProcessError as exc:
        why = "killed above 21 GiB RSS" if exc.returncode == -9 else f"exit status {exc.returncode}"
        return {"preset": preset, "dtype": dtype, "vocab_divisor": vocab_divisor, "failed": why}
    manifest = Manifest.load(out)
    per_session: dict[str, int] = {}
    for name, size in manifest.files().items():
        if name.startswith("onnx/"):
            session = Path(name).name.split(".onnx")[0]
            per_session[session] = per_session.get(session, 0) + size
    return {
        "preset": preset, "dtype": dtype, "vocab_divisor": vocab_divisor, "seconds": seconds, "peak_rss_bytes": rss,
        "bytes": manifest.total_bytes(), "bytes_per_session": per_session,
        "checkpoint_bytes": sum(p.stat().st_size for p in child.glob("*.safetensors")),
        "bundle": str(out), "checkpoint": str(child),
    }
