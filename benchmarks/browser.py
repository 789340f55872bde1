"""The default bundle in headless Chromium on WASM against onnxruntime in Python, same files, same prompt.

Both sides load the bundle, prefill the chat prompt and decode greedily; the page reports its own load
time, time to first token and tokens per second (window.matslice), measured around transformers.js calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from web_export.node import NODE_DIR, ensure_installed
from web_export.runtime import BundleRuntime, Prompt
from website.serve import make_server

PROMPT = "Hello world"
NEW_TOKENS = 48


def _page(site: Path) -> dict:
    server = make_server(site, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/?backend=wasm"
        command = ["node", "drive.mjs", url, "--chromium", "/usr/bin/chromium", "--prompt", PROMPT,
                   "--max-new-tokens", str(NEW_TOKENS)]
        done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=300, check=True)
    finally:
        server.shutdown()
        server.server_close()
    state = json.loads(done.stdout.strip().splitlines()[-1])["matslice"]
    return {"load_seconds": state["loadMs"] / 1000, "first_token_seconds": state["lastRun"]["firstTokenMs"] / 1000,
            "tokens_per_second": state["lastRun"]["tokensPerSecond"], "prompt_ids": state["lastRun"]["promptIds"],
            "dtype": state["lastRun"]["dtype"], "tokens": state["lastRun"]["tokens"]}


def _python(bundle: Path, dtype: str, prompt_ids: list[int]) -> dict:
    start = time.perf_counter()
    runner = BundleRuntime.from_bundle(bundle, dtype)
    load = time.perf_counter() - start
    inputs = Prompt(prompt_ids)
    start = time.perf_counter()
    runner.greedy(inputs, 0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    runner.greedy(inputs, NEW_TOKENS - 1)
    return {"load_seconds": load, "first_token_seconds": first,
            "tokens_per_second": NEW_TOKENS / (time.perf_counter() - start)}


def bench_browser(work: Path) -> dict:
    site = work / "web"
    subprocess.run([sys.executable, "-m", "matslice", "build-web", "--no-parent", "--out", str(site)], check=True,
                   capture_output=True)
    ensure_installed()
    models = json.loads((site / "models.json").read_text())
    variant = next(v for v in models["variants"] if v["id"] == models["default"])
    page = _page(site)
    python = _python(site / variant["path"], page["dtype"], page["prompt_ids"])
    return {"variant": variant["id"], "browser": page, "python": python,
            "ratios": {key: page[key] / python[key] for key in ("load_seconds", "first_token_seconds",
                                                               "tokens_per_second")}}
