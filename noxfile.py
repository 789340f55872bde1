"""The sessions people run. `nox -s build_web` is the main job; `nox -s tests` is what CI runs.

Every session runs `matslice` (or pytest, ruff) from one shared environment, `.nox/matslice`, installed
from pyproject.toml (torch pinned there) the first time any session needs it and refreshed only when
pyproject.toml changes. One environment, not one per session: torch alone is 5.5 GB, and four copies of
it were 24 GB of disk for a newcomer who ran every session.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]

ENV = Path(".nox/matslice")
EXTRAS = "web,dev,demo,search"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "GRADIO_ANALYTICS_ENABLED": "False"}


def _uv() -> str | None:
    """uv, when nox was installed with it (`pip install 'nox[uv]'`) or it is on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _env(session: nox.Session) -> Path:
    """The shared environment's bin/ folder, created or brought up to date with pyproject.toml.

    uv builds it when present: its cache is one per user, so a second clone's environment is links into
    that cache (seconds) instead of 6 GB installed again. Without uv, the standard venv and pip do it.
    """
    python = ENV / "bin" / "python"
    stamp = ENV / ".installed"
    wanted = hashlib.sha256(Path("pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    uv = _uv()
    if not python.exists():
        session.log(f"creating the shared environment {ENV} with {'uv' if uv else 'venv and pip'} "
                    "(once; about 6 GB, torch included)")
        if uv:
            session.run(uv, "venv", "--quiet", "--seed", "--python", sys.executable, str(ENV), external=True)
        else:
            session.run(sys.executable, "-m", "venv", str(ENV), external=True)
    if not stamp.is_file() or stamp.read_text() != wanted:
        if uv:
            install = [uv, "pip", "install", "--python", str(python)]
        else:
            install = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
        session.run(*install, "--quiet", "-e", f".[{EXTRAS}]", external=True)
        stamp.write_text(wanted)
    return ENV / "bin"


def _matslice(session: nox.Session, *args: str) -> None:
    session.run(str(_env(session) / "matslice"), *args, *session.posargs, env=OFFLINE, external=True)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite: real tiny Gemma 3n models, real safetensors, real onnxruntime, real transformers.js."""
    session.run(str(_env(session) / "pytest"), *(session.posargs or ["-q"]), env=OFFLINE, external=True)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff, as configured in pyproject.toml."""
    session.run(str(_env(session) / "ruff"), "check", ".", external=True)


@nox.session(venv_backend="none")
def build_web(session: nox.Session) -> None:
    """Slice and export the parent and its variants into dist/web (default: the nano model); `-- --help`."""
    _matslice(session, "build-web")


@nox.session(venv_backend="none")
def serve(session: nox.Session) -> None:
    """Serve dist/web on 127.0.0.1:8000, cross-origin isolated (threaded WASM); `-- DIR --port N` to change."""
    _matslice(session, "serve")


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """The side-by-side comparison app on 127.0.0.1:7860 (builds the default variants first if none are built)."""
    _matslice(session, "demo")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Speed, memory and size benchmarks; figures land in benchmarks/results.json (`-- --report`: into README)."""
    _matslice(session, "bench")
