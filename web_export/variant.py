"""One variant, built once per machine: a parent checkpoint, a slice of it and dtypes -> a bundle in the user cache.

Why one path: build-web's site, the demo's default variants, a search front's slices and the Design tab's builds
are all the same two steps, slice then export. Each kept its own folder and key, and one of those keys (the
folder's path and config.json) served a stale bundle after a weight file changed. Here the key is everything a
bundle is made from: the parent's files by content, the slice (its plan, and the kept ids of a vocabulary cut),
the dtypes, the encoders, and the code that slices and exports. The bundle is built under a lock, whole or not
at all (`gemma3n.cache.cached`), into `variants/<key>` of the user cache; a caller that wants it somewhere else
(a site's `models/<id>/`, a design's folder) gets hard links to its files (copies across file systems), which
take no space and no time. Edit a copy of a bundle, not a linked one: the links share the cache's bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gemma3n.cache import cached, code_key, content_key, folder
from gemma3n.config import load_config
from gemma3n.folders import atomic_folder
from gemma3n.progress import Progress, report, within
from slicer.options import plan_for
from slicer.plan import SlicePlan, SliceSpec

CODE = ("gemma3n", "slicer", "web_export")  # the code that decides a bundle's bytes
KEY_FILE = ".matslice-key"  # in a kept checkpoint: the variant it was sliced for (dot files are not content)
SLICING_SHARE = 0.05  # of a build's time, for progress reports: streaming tensors is fast beside tracing


@dataclass(frozen=True)
class Built:
    """A variant's bundle: where it is, its cache key, and whether this call built it or found it built."""

    bundle: Path
    key: str
    reused: bool
    seconds: float


def variant_key(parent: Path, plan: SlicePlan | None, dtypes: tuple[str, ...], encoders: set[str] | None,
                embeddings: str = "bundled") -> str:
    """The cache key: parent content, slice, dtypes, encoders (None: all the child has), embeddings and code."""
    vocab = None if plan is None or plan.vocab is None else list(plan.vocab.text_ids)
    record = {"parent": content_key(parent), "code": code_key(*CODE), "dtypes": list(dtypes),
              "encoders": None if encoders is None else sorted(encoders),
              "slice": None if plan is None else plan.record, "vocab_ids": vocab, "embeddings": embeddings}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def build_variant(parent: Path, spec: SliceSpec | SlicePlan | None, out: Path | None = None,
                  dtypes: tuple[str, ...] = ("q4",), encoders: set[str] | None = None, *,
                  checkpoint: Path | None = None, progress: Progress | None = None,
                  embeddings: str = "bundled") -> Built:
    """The bundle of `parent` sliced by `spec` (None: the parent as it is), exported at `dtypes`.

    `spec` may be the slice's plan already made (no second vocabulary cut). `encoders`: the encoder sessions to
    export ("audio", "vision"), None for every one the child has; a text-only child has none either way. `out`:
    where to place the bundle (linked from the cache); None returns the cache entry itself. `checkpoint`: also
    keep the sliced checkpoint there (written unless it holds this key's slice already). `progress` hears the
    fraction done and the stage. `embeddings`: "streamed" writes row files for the embedding tables
    (web_export/rows.py).
    """
    started = time.perf_counter()
    parent = Path(parent)
    config = load_config(parent)
    plan = plan_for(config, spec, parent) if isinstance(spec, SliceSpec) else spec
    child = config if plan is None else plan.child
    encoders = set(encoders) if encoders is not None and child.multimodal else None
    key = variant_key(parent, plan, tuple(dtypes), encoders, embeddings)
    entry = folder("variants") / key
    if checkpoint is not None and plan is not None and not _holds(Path(checkpoint), key):
        _slice(parent, plan, Path(checkpoint), within(progress, 0.0, SLICING_SHARE))
        (Path(checkpoint) / KEY_FILE).write_text(key + "\n")
    exported: list[Path] = []  # whether this call built the entry: decided under the lock, not before it

    def export(path: Path) -> None:
        _export(parent, plan, path, tuple(dtypes), encoders, checkpoint, progress, embeddings)
        exported.append(path)

    cached(entry, export, "manifest.json")
    if out is not None:
        place(entry, Path(out))
    report(progress, 1.0, "done")
    return Built(entry if out is None else Path(out), key, not exported, time.perf_counter() - started)


def _holds(checkpoint: Path, key: str) -> bool:
    """Whether `checkpoint` is this key's slice (its key file, written after the slice, says so)."""
    try:
        return (checkpoint / KEY_FILE).read_text().strip() == key
    except OSError:
        return False


def _slice(parent: Path, plan: SlicePlan, out: Path, progress: Progress | None) -> Path:
    from slicer.checkpoint import slice_checkpoint

    report(progress, 0.0, "slicing")
    slice_checkpoint(parent, out, plan, overwrite=True, progress=False)
    report(progress, 1.0, "sliced")
    return out


def _export(parent: Path, plan: SlicePlan | None, entry: Path, dtypes: tuple[str, ...], encoders: set[str] | None,
            checkpoint: Path | None, progress: Progress | None, embeddings: str) -> None:
    """Slice into a scratch folder beside the entry (unless `checkpoint` holds the slice) and export. The scratch
    folder is named as a partial of the entry, so a killed build's slice is removed by the next build of it."""
    from web_export.bundle import write_bundle

    options = {"dtypes": dtypes, "modalities": encoders, "progress": within(progress, SLICING_SHARE, 1.0),
               "embeddings": embeddings}
    if plan is None:
        write_bundle(parent, entry, **options)
    elif checkpoint is not None:
        write_bundle(checkpoint, entry, **options)
    else:
        with tempfile.TemporaryDirectory(prefix=f".{entry.name}.partial-{os.getpid()}-slice-", dir=entry.parent) as tmp:
            child = _slice(parent, plan, Path(tmp) / "child", within(progress, 0.0, SLICING_SHARE))
            write_bundle(child, entry, **options)


def place(entry: Path, out: Path) -> None:
    """`out` becomes a tree of hard links to `entry`'s files (copies where linking fails), whole or not at all;
    left alone when it already is (its manifest is the entry's file)."""
    if (out / "manifest.json").is_file() and (out / "manifest.json").samefile(entry / "manifest.json"):
        return
    with atomic_folder(out, overwrite=True) as work:
        shutil.copytree(entry, work, copy_function=_link_or_copy, dirs_exist_ok=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)
