"""Output folders appear whole or not at all, whatever kills the writer, and a replaced folder is swapped only
once its successor is complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gemma3n.errors import UserError
from gemma3n.folders import atomic_folder, check_new, remove_abandoned

WRITER = """
import sys, time
from pathlib import Path
from gemma3n.folders import atomic_folder
with atomic_folder(Path(sys.argv[1]), overwrite=True) as work:
    (work / "first").write_text("new")
    print("ready", flush=True)
    time.sleep(60)
    (work / "second").write_text("new")
"""


def _killed_writer(out: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_writer_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    _killed_writer(out)
    assert not out.exists()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.partial-")]
    assert len(left) == 1 and (left[0] / "first").is_file()
    assert remove_abandoned(out) == left and not left[0].exists()


def test_killed_replacement_keeps_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with atomic_folder(out) as work:
        (work / "first").write_text("old")
    _killed_writer(out)
    assert (out / "first").read_text() == "old" and not (out / "second").exists()
    with atomic_folder(out, overwrite=True) as work:  # the next write also clears what the killed one left
        (work / "first").write_text("newer")
    assert (out / "first").read_text() == "newer"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_error_inside_removes_the_work_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "x") as work:
        (work / "half").write_text("...")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_out_needs_overwrite(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="already exists"):
        check_new(tmp_path / "x", overwrite=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write under|is a file"):
        check_new(tmp_path / "file" / "x", overwrite=False)


def test_a_running_writers_folder_is_not_removed(tmp_path: Path) -> None:
    live = tmp_path / f".bundle.partial-{os.getpid()}-abc"
    live.mkdir()
    assert remove_abandoned(tmp_path / "bundle") == [] and live.exists()
