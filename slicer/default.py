"""The embedded default checkpoint that every command falls back on when given no model.

It is built offline on first use and cached under `.cache/models/`, keyed by the code that makes it,
so `build_web`, `demo` and `eval` share one copy and rebuild only when that code changes.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

CACHE = Path(".cache/models")


def _code_key(*modules: str) -> str:
    digest = hashlib.sha256()
    for module in modules:
        digest.update((Path(__file__).parent / f"{module}.py").read_bytes())
    return digest.hexdigest()[:12]


def default_checkpoint(cache: Path = CACHE, seed: int = 0) -> Path:
    """The default model folder: the tiny random multimodal Gemma 3n, built once and cached."""
    from slicer.tiny import write_tiny

    folder = cache / f"tiny-seed{seed}-{_code_key('tiny')}"
    if not (folder / "config.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".tiny-", dir=cache))
        try:
            write_tiny(work / "model", seed=seed)
            shutil.rmtree(folder, ignore_errors=True)
            (work / "model").rename(folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder
