"""What tests share besides fixtures: the byte oracle's check of a whole bundle, running `matslice` and killing it
half-way, and serving the demo. Importable from any test module as `helpers` (tests/ is on the path)."""

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
