"""What a page downloads to run a bundle at one dtype: its sessions' files, the side files and config.json.

Why the side files count: at Gemma's full vocabulary tokenizer.json alone is 33 MB, and on a small slice the side
files are several percent of the download. They are the parent's files (the slicer and the exporter copy them
byte for byte), except that a vocabulary cut rewrites the tokenizer and generation files (predicted here by
running the same rewrites on the parent's files), and config.json, computed as the exporter writes it with each
session file's count of external data chunks. Without the checkpoint folder (a config alone) the side files
are unknown and `side_files` returns None.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from gemma3n.bundle_files import OPTIONAL_FILES, REQUIRED_FILES, bundle_config, json_text
from gemma3n.dtypes import DTYPES
from gemma3n.folders import side_files as checkpoint_side_files
from slicer.plan import SlicePlan
from slicer.vocab import REWRITTEN_FILES, VocabCut, rewrite_file


def side_files(plan: SlicePlan, folder: Path | None, chunks: Mapping[str, Mapping[str, int]],
               dtypes: tuple[str, ...]) -> dict[str, int] | None:
    """{file name: bytes} of the bundle's non-ONNX files, config.json included. `chunks`: {session: {dtype: the
    session file's external data chunks}}, as the footprint counts them."""
    if folder is None:
        return None
    found = {}
    for path in checkpoint_side_files(folder, text_only=plan.text_only_child):
        if path.name not in REQUIRED_FILES + OPTIONAL_FILES:
            continue
        found[path.name] = path.stat().st_size
        if plan.vocab is not None and path.name in REWRITTEN_FILES:
            found[path.name] = _rewritten_bytes(path, plan.vocab)
    records = {session: {dtype: {"file": f"onnx/{session}{DTYPES[dtype].suffix}.onnx", "external_data_chunks": n}
                         for dtype, n in per.items()} for session, per in chunks.items()}
    source = json.loads(json.dumps(plan.child.to_json(), sort_keys=True))  # as the slicer writes config.json
    found["config.json"] = len(json_text(bundle_config(source, records, dtypes)).encode())
    return dict(sorted(found.items()))


_REWRITTEN: dict[tuple[str, int, str], int] = {}


def _rewritten_bytes(path: Path, cut: VocabCut) -> int:
    """Bytes of a side file as a cut rewrites it; remembered per file and kept ids, since the Design tab re-plans
    on every click and Gemma's tokenizer.json takes seconds to rewrite."""
    key = (str(path), path.stat().st_mtime_ns, hashlib.sha256(repr(cut.text_ids).encode()).hexdigest())
    if key not in _REWRITTEN:
        if len(_REWRITTEN) > 32:
            _REWRITTEN.clear()
        _REWRITTEN[key] = len(rewrite_file(path.name, path.read_text(), cut).encode())
    return _REWRITTEN[key]
