"""A bundle's manifest.json, read and checked once: what every Python reader of a bundle asks of it.

The exporter writes it (web_export/bundle.py): the dtypes and the default one, per session and dtype the .onnx
file with its data chunks, bytes and largest tensor, parameter counts, the slice record (`matslice`), and every
file's bytes and hashes. Readers used to index that JSON by hand, each with its own idea of "the bundle's bytes".
There is one here, `download`: every file a page fetches to run some sessions at one dtype, the side files
(tokenizer, configs, chat template) included, which is also what `matslice plan` predicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma3n.errors import UserError

NAME = "manifest.json"
REQUIRED = ("dtypes", "default_dtype", "sessions", "files")


@dataclass(frozen=True)
class Manifest:
    """A bundle folder and its manifest; `data` is the JSON as written, for the fields not named here."""

    folder: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """The manifest of the bundle at `folder`; a missing, unreadable or foreign one is one UserError."""
        path = Path(folder) / NAME
        if not path.is_file():
            raise UserError(f"{folder} has no {NAME}: pass a bundle written by `matslice export`")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{path} cannot be read ({error}): export the bundle again") from None
        missing = [key for key in REQUIRED if not isinstance(data, dict) or key not in data]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}: it is not a manifest `matslice export` wrote")
        return cls(Path(folder), data)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(self.data["dtypes"])

    @property
    def default_dtype(self) -> str:
        return str(self.data["default_dtype"])

    @property
    def sessions(self) -> tuple[str, ...]:
        return tuple(self.data["sessions"])

    @property
    def text_only(self) -> bool:
        return bool(self.data.get("text_only"))

    @property
    def params(self) -> dict[str, Any]:
        return self.data.get("params") or {}

    @property
    def slice(self) -> dict[str, Any] | None:
        """The slice record the child's config carries (`matslice`); None for an unsliced checkpoint."""
        return self.data.get("matslice")

    @property
    def largest_tensor(self) -> dict[str, Any]:
        """The largest tensor over every session and dtype: {session, dtype, name, bytes}."""
        return self.data["largest_tensor"]

    def session(self, name: str, dtype: str) -> dict[str, Any]:
        """One session file's record at `dtype`: file, data_files, bytes, largest_tensor."""
        return self.data["sessions"][name][dtype]

    def files(self) -> dict[str, int]:
        """Every file of the bundle (relative name -> bytes), every dtype's."""
        return {name: int(record["bytes"]) for name, record in self.data["files"].items()}

    def side_files(self) -> dict[str, int]:
        """The files a page fetches whatever it runs: tokenizer, configs, chat template (not under onnx/)."""
        return {name: size for name, size in self.files().items() if not name.startswith("onnx/")}

    def download(self, dtype: str | None = None, sessions: Iterable[str] | None = None) -> int:
        """Bytes a page downloads to run `sessions` (default: all) at `dtype` (default: the bundle's default):
        those sessions' .onnx files and data chunks, and the side files."""
        dtype = dtype or self.default_dtype
        names = self.sessions if sessions is None else tuple(sessions)
        return sum(self.side_files().values()) + sum(int(self.session(name, dtype)["bytes"]) for name in names)

    def total_bytes(self) -> int:
        """Every file of the bundle, every dtype's: what the folder holds."""
        return sum(self.files().values())
