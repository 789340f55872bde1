"""Shared fixtures: tiny random Gemma 3n checkpoints written once per test session, the default nano model and
its demo variants from the user cache (built once per machine), offline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@pytest.fixture(scope="session")
def nano_checkpoint() -> Path:
    """The default (trained nano) checkpoint from the user cache: trained once per machine, not per run."""
    from standins.default import default_checkpoint

    return default_checkpoint()


@pytest.fixture(scope="session")
def default_variants(nano_checkpoint: Path):
    """The demo's default variants (demo.variants.build_defaults), sliced and exported once into the user cache."""
    from demo.variants import build_defaults

    return build_defaults(checkpoint=nano_checkpoint)


@pytest.fixture(scope="session")
def tiny_text_graphs(tiny_text: Path) -> list:
    """The tiny text checkpoint's sessions traced once (the slow part of an export), for tests that write variants."""
    from web_export.export import trace_sessions

    return trace_sessions(tiny_text)


def assert_plan_exact(onnx_dir: Path, checkpoint: Path, dtypes: tuple[str, ...], sessions: tuple[str, ...] = (),
                      **options) -> None:
    """Every session variant under `onnx_dir` holds exactly the weight tensors `matslice plan` predicts for
    `checkpoint` (names, bytes, inside or outside the .onnx file), its data files hold exactly those, and its largest
    tensor is the predicted one (evaluation.written.measure raises on any difference)."""
    from evaluation.written import measure
    from gemma3n.config import load_config
    from gemma3n.safetensors import read_tensors
    from slicer.footprint import bundle_sessions, largest, session_parts, vision_tensors_from
    from web_export.quantize import variant_name

    config = load_config(checkpoint)
    vision = vision_tensors_from(read_tensors(checkpoint))
    for session in sessions or bundle_sessions(config):
        for dtype in dtypes:
            parts = session_parts(config, session, dtype, vision_tensors=vision, **options)
            written = measure(onnx_dir / variant_name(session, dtype), parts)
            assert written.largest_tensor == largest(parts), (session, dtype)


MATSLICE = [sys.executable, "-m", "matslice"]
ROOT = Path(__file__).resolve().parents[1]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def demo_server(args: list[str], log: Path, timeout: float = 120) -> Iterator[tuple[str, object]]:
    """`matslice demo --port P args...` in a subprocess; yields (url, gradio_client.Client) once it answers,
    and stops the server on exit. Fails the test with the server's log if it exits or stays silent."""
    import gradio_client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1"}
    with open(log, "w") as out:
        server = subprocess.Popen([*MATSLICE, "demo", "--port", str(port), *args], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                pytest.fail(f"the demo exited with {server.returncode}:\n{log.read_text()}")
            try:
                client = gradio_client.Client(url, verbose=False)
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(f"the demo did not answer within {timeout} s:\n{log.read_text()}")
                time.sleep(1)
        yield url, client
    finally:
        server.terminate()
        server.wait(timeout=30)
