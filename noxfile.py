"""The sessions people run. `nox -s build_web` is the main job; `nox -s tests` is what CI runs.

Every session installs the project from pyproject.toml (torch pinned there), so a fresh clone needs
nothing but Python and nox. Sessions reuse their virtualenv: torch is large.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _install(session: nox.Session, extras: str = "web,dev") -> None:
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: real tiny Gemma 3n models, real safetensors, real onnxruntime, real transformers.js."""
    _install(session, "web,dev,demo")
    # transformers.js for the Node parity tests; --ignore-scripts: onnxruntime-node's install script
    # downloads GPU binaries, while the CPU ones ship inside the package.
    session.run("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", "tests/web_export/node",
                external=True)
    session.run("pytest", *(session.posargs or ["-q"]), env=OFFLINE)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, as configured in pyproject.toml."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks; results land in build/bench/."""
    _install(session)
    session.run("python", "-m", "benchmarks", *session.posargs, env=OFFLINE)


@nox.session
def build_web(session: nox.Session) -> None:
    """Build the parent and sliced variants of a checkpoint into dist/web (default: the nano model)."""
    _install(session)
    session.run("python", "-m", "web_export.build", *session.posargs, env=OFFLINE)


@nox.session
def serve(session: nox.Session) -> None:
    """Serve dist/web on 127.0.0.1:8000, cross-origin isolated (threaded WASM); `-- DIR --port N` to change."""
    session.install("-e", ".", "--no-deps")
    session.run("python", "-m", "web_export.serve", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The side-by-side comparison app on 127.0.0.1:7860 (builds the default variants first if none are built)."""
    _install(session, "web,dev,demo")
    session.run("python", "-m", "demo", *session.posargs, env={**OFFLINE, "GRADIO_ANALYTICS_ENABLED": "False"})
