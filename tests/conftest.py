"""Shared fixtures: tiny random Gemma 3n checkpoints written once per test session, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_multimodal(tmp_path_factory) -> Path:
    from standins.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny") / "multimodal", seed=0)


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> Path:
    from standins.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny") / "text", text_only=True, seed=0)


MATSLICE = [sys.executable, "-m", "matslice"]


def kill_when(args: list[str], ready: Callable[[], bool], timeout: float = 600) -> bool:
    """Start `matslice args...`, SIGKILL it as soon as `ready()` holds; True if it was killed while running
    (False: it finished first, and the caller has nothing to check)."""
    process = subprocess.Popen([*MATSLICE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if ready():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.01)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def partials(folder: Path) -> list[Path]:
    """Hidden work folders an interrupted write left beside its target."""
    return [p for p in folder.iterdir() if p.name.startswith(".") and (".partial-" in p.name or ".old-" in p.name)]
