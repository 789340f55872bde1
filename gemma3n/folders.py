"""Output folders that appear whole or not at all, and the files a checkpoint carries beside its weights.

Every stage writes a folder: a sliced checkpoint, a bundle, a cached model, a site's variant. It is built
in a hidden sibling `.NAME.partial-PID-XXXX` and renamed into place only when complete, and an older
NAME is swapped out only after that, so a crash, Ctrl-C or kill -9 at any moment leaves the old folder
or the new one under NAME, never half of one. Siblings left by a process that no longer runs are removed
by the next write to the same place.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gemma3n.errors import UserError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".onnx_data", ".h5", ".msgpack")
NOT_SIDE_FILES = {"config.json", "README.md", "model.safetensors.index.json"}
PROCESSOR_FILES = {"preprocessor_config.json", "processor_config.json"}


def check_writable(out: Path) -> None:
    """Fail now, not after minutes of work, when OUT cannot be created where it is asked for."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: choose a folder")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"cannot write under {parent}: choose a folder you can write to")


def check_new(out: Path, overwrite: bool) -> None:
    """OUT must not exist unless `overwrite`, and must be creatable."""
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists: choose another folder or pass --overwrite")
    check_writable(out)


@contextmanager
def atomic_folder(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `out`; when the block ends without error it becomes `out`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists: choose another folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield work
        os.chmod(work, 0o755)
        replace_folder(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def replace_folder(new: Path, out: Path) -> None:
    """Move `new` to `out`; an older `out` is moved aside first and removed only after the swap."""
    if not out.exists():
        new.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    new.rename(out)
    shutil.rmtree(old)


def remove_abandoned(out: Path) -> list[Path]:
    """Remove `.NAME.partial-PID-*` and `.NAME.old-PID-*` siblings whose process is gone; returns them."""
    removed = []
    for kind in ("partial", "old"):
        for path in map(Path, glob.glob(str(out.parent / f".{glob.escape(out.name)}.{kind}-*"))):
            pid = path.name.removeprefix(f".{out.name}.{kind}-").split("-", 1)[0]
            if pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def side_files(folder: Path, *, text_only: bool = False) -> list[Path]:
    """Tokenizer, processor, generation and chat-template files: every top-level file but weights and config."""
    skip = NOT_SIDE_FILES | (PROCESSOR_FILES if text_only else set())
    return [path for path in sorted(Path(folder).iterdir())
            if path.is_file() and not path.name.startswith(".") and not path.name.endswith(WEIGHT_SUFFIXES)
            and path.name not in skip]


def copy_side_files(folder: Path, out: Path, *, names: Iterable[str] | None = None,
                    text_only: bool = False) -> list[str]:
    """Copy `folder`'s side files (only those in `names`, when given) into `out`, byte for byte."""
    wanted = None if names is None else set(names)
    copied = []
    for path in side_files(folder, text_only=text_only):
        if wanted is None or path.name in wanted:
            shutil.copyfile(path, out / path.name)
            copied.append(path.name)
    return copied
