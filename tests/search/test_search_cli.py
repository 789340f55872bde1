"""`matslice search` from the command line: bad input is one `error:` line and exit status 2, the front file is
what the demo loads, and a local Ray cluster measures the same front as this process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port

from gemma3n.config import load_config
from search.space import space_for
from search.study import Request, run_search
from slicer.plan import SliceSpec
from slicer.report import folder_tensors

ROOT = Path(__file__).resolve().parents[2]
ENV = os.environ | {"PYTHONPATH": str(ROOT)}
OPTIONS = {"block_size": 32, "symmetric": True, "max_file_bytes": 1_500_000_000, "max_tensor_bytes": 256 << 20}


def _search(*args: str, cwd: Path = ROOT, home: Path | None = None) -> subprocess.CompletedProcess:
    """`matslice search ...`; `home`: Ray's state (its auth token, ~/.ray) there instead of the user's home."""
    env = ENV if home is None else ENV | {"HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "matslice", "search", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def _error(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines and lines[-1].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[-1]


def test_a_budget_below_the_smallest_slice_says_what_the_smallest_is(tiny_multimodal: Path) -> None:
    space = space_for(load_config(tiny_multimodal), tiny_multimodal, SliceSpec(), "q4", OPTIONS,
                      folder_tensors(tiny_multimodal))
    smallest = space.smallest()[1]
    line = _error(_search(str(tiny_multimodal), "--budget-bytes", str(smallest - 1)))
    assert f"is {smallest:,} bytes" in line and "smallest" in line


def test_a_short_calibration_file_is_refused(tiny_multimodal: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Too short to tell two slices apart.")
    line = _error(_search(str(tiny_multimodal), "--budget-bytes", "1GB", "--calibration", str(short)))
    assert "at least 64 tokens" in line


def test_an_unreachable_ray_address_is_one_line(tiny_multimodal: Path) -> None:
    started = time.monotonic()
    line = _error(_search(str(tiny_multimodal), "--budget-bytes", "1GB", "--trials", "2",
                          "--ray", f"127.0.0.1:{free_port()}"))
    assert "cannot reach the Ray cluster" in line
    assert time.monotonic() - started < 60


def test_the_search_chooses_layers_and_widths_itself(tiny_multimodal: Path) -> None:
    assert "--layers-to-skip" in _error(_search(str(tiny_multimodal), "--budget-bytes", "1GB", "--ffn-dims", "64"))


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory) -> Path:
    """A home folder for the Ray processes of these tests: Ray keeps its auth token in ~/.ray, and a token left
    there by one run (`--ray local` writes one) must neither break another nor stay in the user's home."""
    return tmp_path_factory.mktemp("ray-home")


@pytest.fixture(scope="module")
def ray_head(ray_home: Path) -> Iterator[str]:
    """A one-CPU Ray head on a free port, in its own process group so that only it is stopped afterwards."""
    pytest.importorskip("ray")
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray is None:
        pytest.skip("the ray command is not installed beside this Python")
    port, temp = free_port(), tempfile.mkdtemp(prefix="ray-")
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                            env=ENV | {"HOME": str(ray_home)}, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        else:  # a slow head is a failure to report, not a reason to skip what CI must check
            pytest.fail(f"ray start --head did not listen on port {port} within 3 minutes (exit {head.poll()})")
        yield f"127.0.0.1:{port}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
                head.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(temp, ignore_errors=True)


def assert_measured_in_ray_workers(result: dict) -> set[str]:
    """Every measurement ran in a Ray worker process (a Ray node id, a pid that is not the driver's); the nodes."""
    driver = result["driver"]
    assert driver["ray_node"] is not None, driver  # the driver joined Ray ...
    assert len(result["measured_by"]) == result["measured"] > 0, result["measured_by"]
    for where in result["measured_by"]:  # ... and every measurement ran elsewhere, in a worker
        assert where["ray_node"] is not None and where["pid"] != driver["pid"], (where, driver)
    return {where["ray_node"] for where in result["measured_by"]}


def test_a_ray_cluster_measures_the_same_front(tiny_multimodal: Path, ray_head: str, ray_home: Path,
                                               tmp_path: Path) -> None:
    front_file = tmp_path / "front.json"
    done = _search(str(tiny_multimodal), "--budget-bytes", "65.3MB", "--trials", "8", "--batch", "4", "--seed", "1",
                   "--ray", ray_head, "--save", str(front_file), "--json", home=ray_home)
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout)
    assert assert_measured_in_ray_workers(remote) == {remote["driver"]["ray_node"]}  # the head is the one node
    local = run_search(Request(tiny_multimodal, 65_300_000, "q4", OPTIONS, trials=8, batch=4, seed=1))
    key = ["layers_to_skip", "ffn_dims", "bytes", "kl", "top1", "trial"]
    assert [[e[k] for k in key] for e in remote["front"]] == [[e[k] for k in key] for e in local["front"]]
    assert remote["hardware"]["workers"] == 1
    saved = json.loads(front_file.read_text())
    assert saved == remote["front"]

    # the demo reads the file as the search wrote it
    assert SliceSpec.from_json(saved[0]) == SliceSpec(tuple(saved[0]["layers_to_skip"]), tuple(saved[0]["ffn_dims"]))


def test_ray_local_measures_in_ray_workers(tiny_multimodal: Path, tmp_path: Path) -> None:
    """`--ray local` starts Ray in the search's own process; the measuring still happens in its actors."""
    pytest.importorskip("ray")
    done = _search(str(tiny_multimodal), "--budget-bytes", "65.3MB", "--trials", "4", "--batch", "4", "--seed", "1",
                   "--ray", "local", "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert len(assert_measured_in_ray_workers(result)) == 1 and result["hardware"]["workers"] == 1


def test_in_process_measures_in_the_driver(tiny_multimodal: Path) -> None:
    result = run_search(Request(tiny_multimodal, 10**9, "q4", OPTIONS, trials=2, batch=2, seed=1))
    assert result["measured"] == len(result["measured_by"]) == 2
    assert {where["pid"] for where in result["measured_by"]} == {os.getpid()} == {result["driver"]["pid"]}
    assert all(where["ray_node"] is None for where in result["measured_by"])


def test_cuda_without_a_gpu_is_refused(tiny_multimodal: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the refusal cannot happen here")
    line = _error(_search(str(tiny_multimodal), "--budget-bytes", "1GB", "--trials", "1", "--device", "cuda"))
    assert "no CUDA GPU" in line
