"""The user cache: derived files kept once per user, not once per clone.

What lives here is what MatSlice can always rebuild but takes minutes to: the trained default model, the
demo's sliced and exported variants, search fronts, evaluation clips. It is one folder per user,
`$MATSLICE_CACHE`, else `$XDG_CACHE_HOME/matslice`, else `~/.cache/matslice`, so a second clone of the
project, and every CI run after the first on one machine, reuses what the first one built.

Every entry is named by a key of everything it is made from (content and code), so a stale entry is never
read: a change makes a new key. An entry is written into a hidden sibling and renamed in when complete
(`gemma3n.folders.atomic_folder`), so a process killed half-way leaves nothing under the entry's name. Two
processes asking for the same missing entry at once take a lock beside it: one builds, the other waits and
then reuses what was built.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gemma3n.errors import UserError

VARIABLE = "MATSLICE_CACHE"
SOURCE = Path(__file__).resolve().parents[1]  # the project's packages


def root() -> Path:
    """The cache folder (not created here): $MATSLICE_CACHE, else $XDG_CACHE_HOME/matslice, else ~/.cache/matslice."""
    if value := os.environ.get(VARIABLE):
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "matslice"


def folder(name: str) -> Path:
    """`root()/name`, created; an unwritable cache is one error that names the folder and the fix."""
    path = root() / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the cache folder {path} ({exc.strerror}): set {VARIABLE} to a folder "
                        "you can write to") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"the cache folder {path} is not writable: set {VARIABLE} to a folder you can write to")
    return path


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock named for `path` (the file `.NAME.lock` beside it) while the block runs.

    The lock is the kernel's (flock): it is released when the holder exits, killed or not, so a dead
    builder never blocks the next one.
    """
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is building {path}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached(path: Path, build: Callable[[Path], object], marker: str) -> Path:
    """`path`, built once by `build(path)` unless it already holds `marker` (the file a complete entry has).

    `build` must write `path` whole or not at all (atomic_folder does). Two processes: the second waits for
    the first's lock, then finds the entry complete and reuses it. An entry without its marker was not
    written by this code (MatSlice renames entries in only when complete): it is refused, not used.
    """
    path = Path(path)
    if (path / marker).is_file():
        return path
    with locked(path):
        if (path / marker).is_file():
            return path
        if path.exists():
            raise UserError(f"the cache entry {path} is incomplete (no {marker}): remove it (rm -r '{path}') "
                            "and run again")
        build(path)
    if not (path / marker).is_file():
        raise AssertionError(f"building {path} did not write {marker}")
    return path


CODE_SUFFIXES = (".py", ".csv", ".json")  # a package's code and the tables it reads


def code_key(*names: str, extra: str = "") -> str:
    """A short digest of `extra` and the source of the named project modules or packages (`standins.nano`,
    `web_export`: every file of its code and tables, by name and content): part of the key of anything that code
    writes, so a code change is a new entry."""
    digest = hashlib.sha256(extra.encode())
    for name in names:
        path = SOURCE / name.replace(".", "/")
        if not path.is_dir():
            digest.update(path.with_suffix(".py").read_bytes())
            continue
        for file in sorted(f for f in path.rglob("*") if f.suffix in CODE_SUFFIXES and "__pycache__" not in f.parts):
            digest.update(file.relative_to(SOURCE).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def content_key(folder: Path) -> str:
    """sha256 over every file of `folder` (relative names and contents; dot files aside), so any edit changes it.

    Remembered per file list, sizes and modification times within a process: the demo keys three variants of
    one parent, and a real parent is 5-16 GB."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    stamp = tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _content_key(folder, stamp)


@functools.lru_cache(maxsize=32)
def _content_key(folder: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        digest.update(name.encode() + b"\0")
        with open(folder / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()
