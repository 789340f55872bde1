"""The Pareto front of measured slices (bundle bytes against mean KL), and the file the demo reads it from.

The front file is a JSON list, one object per slice: its name, the SliceSpec fields (`SliceSpec.to_json`, what
`SliceSpec.from_json` and `matslice slice` take), the parent it slices, and the predicted bytes and measured
KL / top-1 beside them, so the demo can show the search's numbers next to its own.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slicer.options import spec_options
from slicer.plan import SliceSpec


@dataclass(frozen=True)
class Candidate:
    """A measured slice: what it is, what it weighs, how far it is from the parent, and the trial that found it."""

    spec: SliceSpec
    bytes: int
    kl: float
    top1: float
    trial: int
    seconds: float


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other is both at most as large and at most as far from the parent as, strictly better in
    one; by bytes ascending (ties by KL, then by the earlier trial, so the front is the same on every run)."""
    front: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (c.bytes, c.kl, c.trial)):
        if not front or candidate.kl < front[-1].kl:
            front.append(candidate)
    return front


def slice_command(model: str, name: str, spec: SliceSpec) -> str:
    return shlex.join(["matslice", "slice", model, f"out/{name}", *spec_options(spec)])


def front_entries(front: Sequence[Candidate], model: str, dtype: str) -> list[dict[str, Any]]:
    """The front as the file and `--json` hold it: names s1, s2, ... by size."""
    entries = []
    for rank, found in enumerate(front, 1):
        name = f"s{rank}"
        spec = found.spec
        entries.append({
            "name": name,
            **spec.to_json(),
            "model": model,
            "dtype": dtype,
            "bytes": found.bytes,
            "kl": found.kl,
            "top1": found.top1,
            "trial": found.trial,
            "command": slice_command(model, name, spec),
        })
    return entries


def save_front(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2) + "\n")
    return path
