"""The embedded default checkpoint that every command falls back on when given no model.

The default is the nano Gemma 3n (`standins.nano`): trained MatFormer-style, so the site, the demo and
`eval` show text and slices that are sensibly worse the more is cut. The tiny random model stays
reachable as `default_checkpoint(kind="tiny")` for tests that only need the structure.

Either is built offline on first use and kept in the user cache (`gemma3n.cache`: `models/` under
~/.cache/matslice unless $MATSLICE_CACHE says otherwise), keyed by the code that makes it and, for nano, the
training text's sources (the Python version, whose bundled documentation is one, and the pinned npm packages
the rest comes from, see `standins.corpus.sources_key`). So `build_web`, `demo`, `eval`, the tests and every
clone on the machine share one copy, and rebuild only when that code or text changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from gemma3n.cache import cached, code_key, folder

Kind = Literal["nano", "tiny"]


def _builder(kind: Kind) -> tuple[str, Callable[[Path, int], Path]]:
    if kind == "tiny":
        from standins.tiny import write_tiny

        key = code_key("standins.tiny", "standins.tokens", "standins.folder")
        return key, lambda out, seed: write_tiny(out, seed=seed)
    if kind == "nano":
        from standins.corpus import sources_key
        from standins.nano import write_nano

        modules = ("standins.nano", "standins.nano_recipe", "standins.tokens", "standins.corpus", "standins.wordnet",
                   "standins.books", "standins.packages", "standins.tiny", "standins.folder", "slicer.masked")
        return (code_key(*modules, extra=sources_key()),
                lambda out, seed: write_nano(out, seed=seed))
    raise ValueError(f"unknown default model kind {kind!r}: choose nano or tiny")


def build_key(kind: Kind = "nano") -> str:
    """The key of the code and sources a default model is built from: what its cache folder, and anything
    derived from a training run (the nano benchmark's records), must be named by."""
    return _builder(kind)[0]


def default_checkpoint(cache: Path | None = None, seed: int = 0, kind: Kind = "nano") -> Path:
    """The default model folder (the trained nano Gemma 3n unless ``kind="tiny"``), built once and cached.

    ``cache``: where the models are kept, the user cache's ``models/`` unless given. A second process asking
    for the same model while the first trains it waits for it instead of training it again.
    """
    key, build = _builder(kind)
    cache = folder("models") if cache is None else Path(cache)
    # the model is written into a hidden sibling and renamed in when complete, config.json included
    return cached(cache / f"{kind}-seed{seed}-{key}", lambda out: build(out, seed), "config.json")
