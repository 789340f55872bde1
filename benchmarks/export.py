"""Export cost on full-size shapes: time, peak RSS and bundle bytes per session and dtype.

A user exports a 26-30 layer E4B variant on a laptop. We write a synthetic checkpoint with exactly the
shapes slicing E4B to a preset (text only) gives (the parent at full vocabulary would not fit this disk
beside it; slicing has its own benchmark) and export it, each export in a fresh process so its peak RSS
is its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks.slicing import _timed
from benchmarks.synthetic import synthetic_text_config, write_synthetic
from gemma3n.config import parse_config
from slicer.plan import make_plan
from slicer.presets import get_preset


def _child(work: Path, preset: str, vocab_divisor: int) -> Path:
    """A synthetic checkpoint shaped like E4B sliced to `preset`, text only (written once, then reused)."""
    child = work / f"{preset}-v{vocab_divisor}"
    if not (child / "config.json").exists():
        spec = replace(get_preset(preset).spec(), modalities=("text",))
        parent = parse_config(synthetic_text_config(vocab_divisor), "synthetic E4B")
        write_synthetic(child, make_plan(parent, spec).child.to_json())
    return child


RSS_LIMIT = 21 << 30  # of this machine's 24 GiB: stop an export before the OOM killer picks a victim


def bench_export(work: Path, preset: str, dtype: str = "q4", vocab_divisor: int = 1) -> dict:
    child = _child(work, preset, vocab_divisor)
    out = work / f"bundle-{preset}-{dtype}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "matslice", "export", str(child), str(out), "--dtype", dtype]
    try:
        seconds, rss = _timed(command, rss_limit=RSS_LIMIT)
    except subprocess.CalledProcessError as exc:
        why = "killed above 21 GiB RSS" if exc.returncode == -9 else f"exit status {exc.returncode}"
        return {"preset": preset, "dtype": dtype, "vocab_divisor": vocab_divisor, "failed": why}
    manifest = json.loads((out / "manifest.json").read_text())
    per_session: dict[str, int] = {}
    for name, record in manifest["files"].items():
        if name.startswith("onnx/"):
            session = Path(name).name.split(".onnx")[0]
            per_session[session] = per_session.get(session, 0) + record["bytes"]
    return {
        "preset": preset, "dtype": dtype, "vocab_divisor": vocab_divisor, "seconds": seconds, "peak_rss_bytes": rss,
        "bytes": sum(r["bytes"] for r in manifest["files"].values()), "bytes_per_session": per_session,
        "checkpoint_bytes": sum(p.stat().st_size for p in child.glob("*.safetensors")),
        "bundle": str(out), "checkpoint": str(child),
    }
