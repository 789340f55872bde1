"""Bundles in headless Chromium against onnxruntime in Python, same files, same prompt.

Both sides load the bundle, prefill the chat prompt and decode greedily; the page reports its own load time,
time to first token and tokens per second (window.matslice), measured around transformers.js calls; Python's
decode rate is measured the same way: (tokens - 1) over the time from the first token to the last.
`bench_browser` runs the default nano slice on WASM. `bench_browser_full_shape` runs a sub-billion variant with
Gemma 3n's real shapes (synthetic weights whose logits spread, so that ids compared mean something, and the
vocabulary cut to the nano model's English) on WASM and on WebGPU (SwiftShader's software adapter when there is
no GPU), with the tab's peak memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from evaluation.metrics import ids_match
from gemma3n.npm import NODE_DIR, ensure_installed
from web_export.manifest import Manifest
from web_export.runtime import BundleRuntime, Prompt
from website.serve import make_server

PROMPT = "Hello world"
NEW_TOKENS = 48
FULL_SHAPE_PRESET = "E0.40B-text"
FULL_SHAPE_VOCAB = 32768
FULL_SHAPE_TOKENS = 8  # WASM runs a 4-bit full-shape token in seconds (no 4-bit kernel in onnxruntime-web's WASM)
WEBGPU_TOKENS = 3  # SwiftShader runs a full-shape token in about a minute


def run_page(site: Path, backend: str = "wasm", new_tokens: int = NEW_TOKENS, timeout: int = 300,
             *extra: str, prompt: str = PROMPT, latency: float = 0.0) -> dict:
    """Serve `site` (each answer `latency` seconds late), drive the page on `backend` (node/drive.mjs) and return its
    figures and ids (`visits`: each visit's, when `--visits` is among `extra`)."""
    server = make_server(site, port=0, quiet=True, latency=latency)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/?backend={backend}"
        command = ["node", "drive.mjs", url, "--chromium", "/usr/bin/chromium", "--prompt", prompt,
                   "--max-new-tokens", str(new_tokens), "--timeout", str(timeout * 1000),
                   *(["--webgpu"] if backend == "webgpu" else []), *extra]
        done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=3 * timeout, check=True)
    finally:
        server.shutdown()
        server.server_close()
    result = json.loads(done.stdout.strip().split("\n")[-1])
    state = result.get("matslice") or {}
    if result.get("failure") or result.get("error") or not state.get("lastRun"):
        raise RuntimeError(f"the page failed on {backend}: {result.get('failure') or result.get('error')}")
    run = state["lastRun"]
    return {"backend": state["backend"], "load_seconds": state["loadMs"] / 1000, "rows": run.get("rows"),
            "visits": [visit["lastRun"] for visit in result.get("visits", [])],
            "first_token_seconds": run["firstTokenMs"] / 1000, "tokens_per_second": run["tokensPerSecond"],
            "prompt_ids": run["promptIds"], "ids": run["newIds"], "dtype": run["dtype"], "tokens": run["tokens"],
            "runtime": state.get("runtime"), "peak_tab_bytes": result["memory"]["peakRendererBytes"],
            "peak_gpu_process_bytes": result["memory"]["peakGpuProcessBytes"],
            "peak_browser_bytes": result["memory"]["peakTotalBytes"]}


def run_python(bundle: Path, dtype: str, prompt_ids: list[int], new_tokens: int = NEW_TOKENS) -> dict:
    """Load, first token (embed + prefill + argmax) and decode rate of onnxruntime's CPU provider (default
    threads) on the same files, with the greedy ids and each step's gap between the top two logits."""
    started = time.perf_counter()
    runner = BundleRuntime.from_bundle(bundle, dtype, only=("embed_tokens", "decoder_model_merged"))
    load = time.perf_counter() - started
    started = time.perf_counter()
    logits, state = runner.prefill(Prompt(prompt_ids))
    ids, gaps, times = [], [], []
    for step in range(new_tokens):
        if step:
            logits = runner.step(ids[-1], state)
        row = logits[-1]
        top = np.partition(row, -2)[-2:]
        ids.append(int(row.argmax()))
        gaps.append(float(abs(top[1] - top[0])))
        times.append(time.perf_counter())
    decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    return {"load_seconds": load, "first_token_seconds": times[0] - started, "tokens_per_second": decode,
            "ids": ids, "top2_gaps": gaps}


def _ratios(page: dict, python: dict) -> dict:
    return {key: page[key] / python[key] for key in ("load_seconds", "first_token_seconds", "tokens_per_second")
            if page.get(key) and python.get(key)}


def bench_browser(work: Path) -> dict:
    """The default nano slice on WASM, against onnxruntime-Python on the same files."""
    site = work / "web"
    subprocess.run([sys.executable, "-m", "matslice", "build-web", "--no-parent", "--out", str(site)], check=True,
                   capture_output=True)
    ensure_installed()
    models = json.loads((site / "models.json").read_text())
    variant = next(v for v in models["variants"] if v["id"] == models["default"])
    page = run_page(site)
    python = run_python(site / variant["path"], page["dtype"], page["prompt_ids"], len(page["ids"]))
    return {"variant": variant["id"], "browser": page, "python": python, "ratios": _ratios(page, python)}


def full_shape_checkpoint(work: Path, preset: str = FULL_SHAPE_PRESET) -> Path:
    """A text-only synthetic checkpoint shaped like E4B sliced to `preset`, with spread logits and Gemma's own
    tokenizer moved to Gemma 3n's ids (written once)."""
    from benchmarks.synthetic import synthetic_text_config, write_synthetic
    from benchmarks.vocab import gemma3n_tokenizer
    from gemma3n.config import parse_config
    from slicer.plan import make_plan
    from slicer.presets import get_preset

    child = work / f"{preset}-spread"
    if not (child / "config.json").exists():
        spec = replace(get_preset(preset).spec(), modalities=("text",))
        parent = parse_config(synthetic_text_config(vocab_divisor=1), "synthetic E4B")
        write_synthetic(child, make_plan(parent, spec).child.to_json(), tokenizer=gemma3n_tokenizer(), spread=True)
    return child


def bench_browser_full_shape(work: Path, corpus: Path, preset: str = FULL_SHAPE_PRESET,
                             vocab_size: int | None = FULL_SHAPE_VOCAB, webgpu: bool = True, dtype: str = "q4") -> dict:
    """The full-shape variant in `dtype`, its vocabulary cut to `corpus` (None: kept whole), built into a site and run
    on WASM (and WebGPU) beside onnxruntime-Python."""
    checkpoint = full_shape_checkpoint(work, preset)
    site = work / f"web-{preset}-{vocab_size or 'full'}-{dtype}"
    command = [sys.executable, "-m", "matslice", "build-web", "--model", str(checkpoint), "--dtype", dtype,
               "--out", str(site), "--no-parent", "--name", "cut"]
    if vocab_size:
        command += ["--vocab-corpus", str(corpus), "--vocab-size", str(vocab_size)]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    build_seconds = time.perf_counter() - started
    ensure_installed()
    models = json.loads((site / "models.json").read_text())
    variant = next(v for v in models["variants"] if v["id"] == models["default"])
    bundle = site / variant["path"]
    wasm = run_page(site, "wasm", FULL_SHAPE_TOKENS, 900)
    python = run_python(bundle, dtype, wasm["prompt_ids"], FULL_SHAPE_TOKENS)
    manifest = Manifest.load(bundle)
    result = {
        "preset": preset, "dtype": dtype, "variant": variant["id"], "bytes": variant["bytes"][dtype]["text"],
        "largest_tensor_bytes": manifest.largest_tensor["bytes"], "vocab": (variant["slice"] or {}).get("vocab"),
        "build_seconds": build_seconds, "wasm": wasm, "python": python,
        "wasm_ids": asdict(ids_match(wasm["ids"], python["ids"], python["top2_gaps"])),
        "ratios": _ratios(wasm, python),
    }
    if webgpu:
        result |= run_webgpu(site, python)
    return result


def run_webgpu(site: Path, python: dict, prompt: str = PROMPT) -> dict:
    """A few full-shape tokens of the page on WebGPU (SwiftShader here) and whether they are Python's first ids
    (`python` ran the same prompt); a page that fell back to WASM does not match."""
    gpu = run_page(site, "webgpu", WEBGPU_TOKENS, 1800, prompt=prompt)
    ids = asdict(ids_match(gpu["ids"], python["ids"][: len(gpu["ids"])], python["top2_gaps"]))
    ids["match"] &= gpu["backend"] == "webgpu"
    return {"webgpu": gpu, "webgpu_ids": ids}


STREAMED_PRESETS = ("E0.40B-text", "E2B")  # each cut to its text sessions (full_shape_checkpoint)
STREAMED_NEW_TOKENS = 32
STREAMED_LATENCY = 0.05  # seconds added to every answer of the second streamed run: a slow network's round trip
STREAMED_PROMPT = ("Write a short history of a small harbour town: who founded it and when, how its people lived from "
                   "the sea and the fields, what the great storm of that winter destroyed, how the town was rebuilt, "
                   "and what visitors find there today, in a few plain sentences.")  # 64 tokens with the chat template


def bench_browser_streamed(work: Path, preset: str = STREAMED_PRESETS[0], dtype: str = "q4") -> dict:
    """A full-shape variant at full vocabulary, bundled and with its embeddings streamed, in the page on WASM: bytes a
    first visit downloads (the text sessions and side files, plus the rows fetched for a 64-token prompt and 32
    generated tokens), tab peak, decode rate (and the time streaming adds per generated token, on localhost and with
    50 ms of latency), a second visit's rows fetched (none: the Cache API holds them), the ids of both against
    onnxruntime-Python's on the bundled files, and the streamed variant's first tokens on WebGPU."""
    checkpoint = full_shape_checkpoint(work, preset)
    sites = {}
    for embeddings in ("bundled", "streamed"):
        site = work / f"web-{preset}-full-{dtype}-{embeddings}"
        subprocess.run([sys.executable, "-m", "matslice", "build-web", "--model", str(checkpoint), "--dtype", dtype,
                        "--out", str(site), "--embeddings", embeddings],  # the checkpoint is the variant: no slice
                       check=True, capture_output=True)
        sites[embeddings] = site
    ensure_installed()
    found: dict = {"preset": preset, "dtype": dtype}
    for embeddings, site in sites.items():
        models = json.loads((site / "models.json").read_text())
        variant = models["variants"][0]
        manifest = Manifest.load(site / variant["path"])
        found[embeddings] = {"download_bytes": manifest.download(dtype, manifest.data["text_sessions"]),
                             "largest_tensor_bytes": manifest.largest_tensor["bytes"]}
    try:
        bundled = run_page(sites["bundled"], "wasm", STREAMED_NEW_TOKENS, 1800, prompt=STREAMED_PROMPT)
        found["bundled"]["wasm"] = bundled
    except (RuntimeError, subprocess.CalledProcessError) as error:  # E2B-text: out of wasm32 memory
        found["bundled"]["wasm_error"] = str(error)[-500:]
    # one visit alone for the tab's peak and the decode rate (a reload in the same tab can count two pages at once),
    # then two visits in one profile (the second reads its rows from the Cache API), then 50 ms of latency
    streamed = run_page(sites["streamed"], "wasm", STREAMED_NEW_TOKENS, 1800, prompt=STREAMED_PROMPT)
    visits = run_page(sites["streamed"], "wasm", STREAMED_NEW_TOKENS, 1800, "--visits", "2", prompt=STREAMED_PROMPT)
    slow = run_page(sites["streamed"], "wasm", STREAMED_NEW_TOKENS, 1800, prompt=STREAMED_PROMPT,
                    latency=STREAMED_LATENCY)
    first, second = visits["visits"]
    bundle = sites["bundled"] / json.loads((sites["bundled"] / "models.json").read_text())["variants"][0]["path"]
    python = run_python(bundle, dtype, streamed["prompt_ids"], STREAMED_NEW_TOKENS)
    found["streamed"] |= {
        "wasm": streamed, "wasm_visits": visits, "wasm_50ms": slow, "prompt_tokens": len(streamed["prompt_ids"]),
        "first_visit_bytes": found["streamed"]["download_bytes"] + streamed["rows"]["fetchedBytes"],
        "rows_fetched_bytes": streamed["rows"]["fetchedBytes"], "rows_requests": streamed["rows"]["requests"],
        "second_visit_rows_fetched_bytes": second["rows"]["fetchedBytes"],
        "ids": asdict(ids_match(streamed["ids"], python["ids"], python["top2_gaps"])),
        "ids_equal_on_every_visit": first["newIds"] == second["newIds"] == streamed["ids"] == slow["ids"],
    }
    if "wasm" in found["bundled"]:
        found["bundled"]["ids"] = asdict(ids_match(bundled["ids"], python["ids"], python["top2_gaps"]))
        found["streamed"]["ids_equal_bundled"] = bundled["ids"] == streamed["ids"]
        per_token = {name: 1000 / run["tokens_per_second"] for name, run in
                     (("bundled", bundled), ("streamed", streamed), ("streamed_50ms", slow))}
        found["streamed"]["ms_per_token_added"] = per_token["streamed"] - per_token["bundled"]
        found["streamed"]["ms_per_token_added_50ms"] = per_token["streamed_50ms"] - per_token["bundled"]
    found["streamed"] |= run_webgpu(sites["streamed"], python, STREAMED_PROMPT)
    found["python"] = python
    return found
