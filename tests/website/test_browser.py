"""The built site in real Chromium: the default sliced variant loads on WASM and greedy-generates the same token ids
as onnxruntime in Python on the same bundle files; no request leaves the origin; a corrupt model file is named in the
page.

Why this way: the page is what users run, so the test builds it with `matslice build-web` (the default slice only,
`--no-parent`, to stay fast), serves it with `website.serve` (the cross-origin-isolated server `nox -s serve` runs) and
drives Debian's `/usr/bin/chromium` with playwright-core (node/drive.mjs; playwright never downloads a browser here).
Screenshots go to build/test-artifacts/. Without /usr/bin/chromium the tests skip and say so (`apt-get install -y
chromium`; .ci/run does it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from web_export.node import NODE_DIR, ensure_installed
from web_export.runtime import BundleRuntime, Prompt
from website.serve import make_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "test-artifacts"
PROMPT = "Hello world"
MAX_NEW_TOKENS = 24  # with the chat-template prompt this passes the tiny model's 16-token sliding window
EOS_IDS = (1, 6)  # the tiny model's generation_config eos_token_id

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "web"
    build = [sys.executable, "-m", "matslice", "build-web", "--no-parent", "--out", str(out)]
    subprocess.run(build, cwd=ROOT, check=True, capture_output=True, text=True)
    ensure_installed()
    return out


@pytest.fixture(scope="module")
def origin(site: Path) -> Iterator[str]:
    server = make_server(site, port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def drive(url: str, screenshot: Path, *extra: str) -> dict:
    """Run drive.mjs against `url`; returns its JSON (window.matslice, requests, console, error)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    command = ["node", "drive.mjs", url, "--screenshot", str(screenshot), "--chromium", str(CHROMIUM), *extra]
    done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def default_variant(site: Path) -> dict:
    models = json.loads((site / "models.json").read_text())
    return next(v for v in models["variants"] if v["id"] == models["default"])


def python_greedy(bundle: Path, dtype: str, prompt_ids: list[int], max_new: int) -> list[int]:
    """Greedy ids from onnxruntime in Python, cut after the first EOS as generate() stops there."""
    runner = BundleRuntime.from_bundle(bundle, dtype)
    _, ids = runner.greedy(Prompt(prompt_ids), steps=max_new - 1)
    stop = next((i for i, t in enumerate(ids) if t in EOS_IDS), len(ids) - 1)
    return ids[: stop + 1]


def chat_prompt_ids(bundle: Path) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundle)
    messages = [{"role": "user", "content": PROMPT}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def test_default_variant_matches_onnxruntime(site: Path, origin: str) -> None:
    variant = default_variant(site)
    assert variant["slice"] is not None, "the default variant must be a slice"
    shot = ARTIFACTS / "browser-default-variant.png"
    result = drive(f"{origin}/?backend=wasm", shot, "--prompt", PROMPT, "--max-new-tokens", str(MAX_NEW_TOKENS))
    assert result.get("failure") is None, result
    assert result["error"] is None, result["error"]
    state = result["matslice"]
    assert state["ready"] and state["backend"] == "wasm", state
    run = state["lastRun"]
    bundle = site / variant["path"]
    dtype = run["dtype"]
    assert not variant["not_on_wasm"][dtype], variant["not_on_wasm"]
    assert run["promptIds"] == chat_prompt_ids(bundle)
    expected = python_greedy(bundle, dtype, run["promptIds"], MAX_NEW_TOKENS)
    assert run["newIds"] == expected
    print(f"\nload {state['loadMs']:.0f} ms, first token {run['firstTokenMs']:.0f} ms, "
          f"{run['tokensPerSecond']:.1f} tokens/s over {run['tokens']} tokens ({dtype}, WASM, headless Chromium)")
    assert shot.is_file()


def test_no_request_leaves_the_origin(site: Path, origin: str) -> None:
    result = drive(f"{origin}/?backend=wasm", ARTIFACTS / "browser-requests.png", "--max-new-tokens", "4")
    hosts = {urlparse(url).netloc for url in result["requests"] if urlparse(url).scheme in ("http", "https", "ws")}
    assert hosts == {urlparse(origin).netloc}, hosts
    assert any("/vendor/ort-wasm-simd-threaded" in url for url in result["requests"])


def test_corrupt_model_file_is_named_in_the_page(site: Path, tmp_path: Path) -> None:
    broken = tmp_path / "web"
    shutil.copytree(site, broken)
    variant = default_variant(broken)
    bundle = broken / variant["path"]
    target = json.loads((bundle / "manifest.json").read_text())["sessions"]["decoder_model_merged"]
    usable = [d for d in variant["dtypes"] if not variant["not_on_wasm"][d]]
    data = bundle / target[usable[0]]["data_files"][0]
    raw = np.frombuffer(data.read_bytes(), dtype=np.uint8).copy()
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(raw.tobytes())
    server = make_server(broken, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/?backend=wasm"
        result = drive(url, ARTIFACTS / "browser-corrupt-file.png", "--expect", "error")
    finally:
        server.shutdown()
        server.server_close()
    assert result.get("failure") is None, {k: result.get(k) for k in ("failure", "console")}
    assert result["matslice"]["ready"] is False
    message = result["error"] or ""
    assert data.relative_to(broken).as_posix() in message, message
    assert "corrupt" in message and "nox -s build_web" in message, message
