"""The user cache: where it is, one builder per entry across processes, nothing half-written ever used."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gemma3n import cache
from gemma3n.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

# A builder in its own process: it writes the entry through atomic_folder, slowly, and logs that it built.
BUILDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from gemma3n.cache import cached
    from gemma3n.folders import atomic_folder

    entry, log, seconds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])

    def build(out):
        with atomic_folder(out) as work:
            (work / "part").write_text("half")
            time.sleep(seconds)
            (work / "done").write_text(str(os.getpid()))
        with open(log, "a") as handle:
            handle.write(f"built by {os.getpid()}\\n")

    print(cached(entry, build, "done").joinpath("done").read_text())
""")


def _builder(entry: Path, log: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(entry), str(log), str(seconds)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_root_follows_matslice_cache_then_xdg_then_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MATSLICE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.root() == tmp_path / "home" / ".cache" / "matslice"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.root() == tmp_path / "xdg" / "matslice"
    monkeypatch.setenv("MATSLICE_CACHE", str(tmp_path / "mine"))
    assert cache.root() == tmp_path / "mine"
    assert cache.folder("models") == tmp_path / "mine" / "models" and (tmp_path / "mine" / "models").is_dir()


def test_a_cache_that_cannot_be_written_is_one_error_naming_it(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MATSLICE_CACHE", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(UserError, match=r"cannot create the cache folder .*a-file/cache/models .*set MATSLICE_CACHE"):
        cache.folder("models")


def test_two_processes_asking_for_one_entry_build_it_once(tmp_path: Path) -> None:
    entry, log = tmp_path / "entry", tmp_path / "log"
    first = _builder(entry, log, 3)
    while not any(p.name.startswith(".entry.partial-") for p in tmp_path.iterdir()):  # the first one is building
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = _builder(entry, log, 3)
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0] == (entry / "done").read_text() + "\n"  # both got the one entry
    assert log.read_text() == f"built by {first.pid}\n"
    assert "waiting for another process that is building" in outputs[1][1]


def test_an_entry_a_killed_process_left_is_never_used(tmp_path: Path) -> None:
    entry, log = tmp_path / "entry", tmp_path / "log"
    killed = _builder(entry, log, 60)
    while not any(p.name.startswith(".entry.partial-") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    killed.kill()
    killed.wait()
    assert not entry.exists() and not log.exists()
    again = _builder(entry, log, 0)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert out.strip() == str(again.pid) and log.read_text() == f"built by {again.pid}\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".entry")) == [".entry.lock"]


def test_an_entry_without_its_marker_is_refused_not_used(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "part").write_text("half")
    with pytest.raises(UserError, match=rf"cache entry {entry} is incomplete \(no done\): remove it"):
        cache.cached(entry, lambda out: pytest.fail("must not rebuild over it"), "done")


def test_code_key_changes_with_the_named_source() -> None:
    assert cache.code_key("gemma3n.cache") == cache.code_key("gemma3n.cache")
    assert cache.code_key("gemma3n.cache") != cache.code_key("gemma3n.cache", extra="x")
    assert cache.code_key("gemma3n") != cache.code_key("gemma3n.cache")  # a package: every module in it
