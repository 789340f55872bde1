"""The built site in real Chromium, as users run it: the default sliced variant on WASM and on WebGPU (a real GPU, or
SwiftShader's software adapter in CI) gives onnxruntime-Python's greedy ids on the same files; fp16 arithmetic without
the adapter's shader-f16 is moved off WebGPU with the reason shown; a variant that kept audio answers a WAV given
through the page's file input with Python's and transformers.js-in-Node's ids; no request leaves the origin; and a
corrupt (in any piece, or within a Range request), missing or truncated file, a models.json naming a missing variant,
and a session that onnxruntime cannot create are each named in the page, which never hangs.

Why this way: the page is what users run, so the test builds it with `matslice build-web`, serves it with
`website.serve` (the cross-origin-isolated server `nox -s serve` runs) and drives Debian's `/usr/bin/chromium` with
playwright-core (node/drive.mjs; playwright never downloads a browser here). Screenshots go to build/test-artifacts/.
Without /usr/bin/chromium the tests skip and say so (`apt-get install -y chromium`; .ci/run does it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from helpers import serving

from evaluation.metrics import ids_match
from gemma3n.cache import folder, locked
from gemma3n.npm import NODE_DIR, ensure_installed
from web_export.bundle import hashes
from web_export.runtime import BundleRuntime, Prompt
from website.serve import IsolatedHandler, make_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "test-artifacts"
PROMPT = "Hello world"
MAX_NEW_TOKENS = 24  # with the chat-template prompt this passes the tiny model's 16-token sliding window
EOS_IDS = (1, 6)  # the stand-in models' generation_config eos_token_id

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium")


def build_site(name: str, *options: str) -> Path:
    """`matslice build-web OPTIONS --out DIR` into DIR = test-sites/NAME in the user cache, as a user rebuilds a site:
    build-web reuses every variant whose key (checkpoint content, slice, dtypes, code) is unchanged, so a machine
    exports each variant once. Tests that break files do so in copies (`broken_copy`)."""
    out = folder("test-sites") / name
    with locked(out):  # two test runs at once: one builds, the other then reuses
        build = [sys.executable, "-m", "matslice", "build-web", *options, "--out", str(out)]
        subprocess.run(build, cwd=ROOT, check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def site() -> Path:
    out = build_site("default", "--no-parent", "--dtype", "q4,q8,fp32,q4f16")
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


def drive(url: str, screenshot: Path, *extra: str, timeout: int = 150) -> dict:
    """Run drive.mjs against `url`; returns its JSON (window.matslice, requests, console, error, memory)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    command = ["node", "drive.mjs", url, "--screenshot", str(screenshot), "--chromium", str(CHROMIUM), *extra]
    done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().split("\n")[-1])


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


def broken_copy(site: Path, tmp_path: Path, piece_bytes: int | None = None) -> tuple[Path, Path, dict]:
    """A copy of the site, the default variant's first q4 decoder data file in it, and that bundle's manifest;
    with `piece_bytes`, the manifest's pieces rewritten that small (so a small file has many, as a big one has)."""
    copy = tmp_path / "web"
    shutil.copytree(site, copy)
    bundle = copy / default_variant(copy)["path"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = bundle / manifest["sessions"]["decoder_model_merged"]["q4"]["data_files"][0]
    if piece_bytes:
        manifest["piece_bytes"] = piece_bytes
        for name, record in manifest["files"].items():
            record["pieces"] = hashes(bundle / name, piece_bytes)[1]
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    return copy, data, manifest


def reseal(bundle: Path, manifest: dict, changed: Path) -> None:
    """Record a changed file's bytes and hashes in the manifest, as if it had been written so."""
    record = manifest["files"][changed.relative_to(bundle).as_posix()]
    record["bytes"] = changed.stat().st_size
    record["sha256"], record["pieces"] = hashes(changed, manifest["piece_bytes"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def expect_named_error(folder: Path, shot: str, *extra: str) -> str:
    with serving(folder) as origin:
        result = drive(f"{origin}/?backend=wasm&dtype=q4", ARTIFACTS / shot, "--expect", "error", *extra)
    assert result.get("failure") is None, {k: result.get(k) for k in ("failure", "console")}
    assert result["matslice"]["ready"] is False and result["matslice"]["loading"] is False
    return result["error"] or ""


def test_corrupt_piece_is_named_in_the_page(site: Path, tmp_path: Path) -> None:
    """A byte flipped in the third of many pieces: the file and the piece's bytes are named, nothing loads."""
    copy, data, _ = broken_copy(site, tmp_path, piece_bytes=64 << 10)
    assert data.stat().st_size > 3 * (64 << 10)
    flip(data, 2 * (64 << 10) + 100)
    message = expect_named_error(copy, "browser-corrupt-piece.png")
    assert data.relative_to(copy).as_posix() in message, message
    assert f"is corrupt: bytes {2 * (64 << 10)}-" in message and "nox -s build_web" in message, message


def test_range_requests_are_checked_piece_by_piece(site: Path, tmp_path: Path) -> None:
    copy, data, _ = broken_copy(site, tmp_path, piece_bytes=64 << 10)
    file = data.relative_to(copy).as_posix()
    first, last = 100_000, 200_000
    with serving(copy) as origin:
        ok = drive(f"{origin}/?backend=wasm", ARTIFACTS / "browser-range.png", "--expect", "error",
                   "--range", f"{file}:{first}-{last}")["range"]
    assert ok == {"bytes": last - first + 1, "sha256": hashlib.sha256(data.read_bytes()[first:last + 1]).hexdigest(),
                  "contentRange": f"bytes {first}-{last}/{data.stat().st_size}"}, ok
    flip(data, 130_000)  # inside the range, in a piece the range only partly covers
    with serving(copy) as origin:
        bad = drive(f"{origin}/?backend=wasm", ARTIFACTS / "browser-range-corrupt.png", "--expect", "error",
                    "--range", f"{file}:{first}-{last}")["range"]
    assert "error" in bad and file in bad["error"] and "is corrupt" in bad["error"], bad


def test_missing_and_truncated_files_are_named(site: Path, tmp_path: Path) -> None:
    copy, data, _ = broken_copy(site, tmp_path)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    message = expect_named_error(copy, "browser-truncated-file.png")
    assert data.relative_to(copy).as_posix() in message and "truncated" in message, message
    data.unlink()
    message = expect_named_error(copy, "browser-missing-file.png")
    assert data.relative_to(copy).as_posix() in message and "missing on the server (HTTP 404)" in message, message


def test_models_json_naming_a_missing_variant(site: Path, tmp_path: Path) -> None:
    copy = tmp_path / "web"
    shutil.copytree(site, copy)
    models = json.loads((copy / "models.json").read_text())
    models["variants"].append({**models["variants"][0], "id": "ghost", "label": "ghost", "path": "models/ghost/"})
    (copy / "models.json").write_text(json.dumps(models))
    with serving(copy) as origin:
        result = drive(f"{origin}/?variant=ghost", ARTIFACTS / "browser-missing-variant.png", "--expect", "error")
        unknown = drive(f"{origin}/?variant=nobody", ARTIFACTS / "browser-unknown-variant.png", "--expect", "error")
    assert "models/ghost/manifest.json is missing (HTTP 404)" in (result["error"] or ""), result["error"]
    assert "models.json has no variant nobody" in (unknown["error"] or ""), unknown["error"]


def test_a_session_onnxruntime_cannot_create_is_named(site: Path, tmp_path: Path) -> None:
    """The bytes are the manifest's (resealed), but the graph is not one: the backend fails mid-load; the page
    names the session file, re-enables Load, and does not hang."""
    copy, _, manifest = broken_copy(site, tmp_path)
    bundle = copy / default_variant(copy)["path"]
    graph = bundle / manifest["sessions"]["decoder_model_merged"]["q4"]["file"]
    graph.write_bytes(b"this is not an onnx graph" * 100)
    reseal(bundle, manifest, graph)
    message = expect_named_error(copy, "browser-bad-session.png")
    assert "onnx/" in message and "could not be read by onnxruntime" in message, message


@pytest.mark.parametrize("dtype", ["q4", "fp32"])
def test_webgpu_matches_onnxruntime(site: Path, origin: str, dtype: str) -> None:
    """The page on WebGPU gives onnxruntime-Python's ids, and really ran there: the WebGPU device onnxruntime-web
    created, every session's device, and the asyncify build (the one with the WebGPU provider). A fallback to WASM
    fails the first assertion with the page's reason."""
    variant = default_variant(site)
    result = drive(f"{origin}/?backend=webgpu", ARTIFACTS / f"browser-webgpu-{dtype}.png", "--webgpu", "--dtype", dtype,
                   "--prompt", PROMPT, "--max-new-tokens", str(MAX_NEW_TOKENS), "--timeout", "240000", timeout=400)
    assert result.get("failure") is None, result
    assert result["error"] is None, result["error"]
    state = result["matslice"]
    assert state["backend"] == "webgpu", state["backendReason"]
    assert state["runtime"]["build"] == "ort-wasm-simd-threaded.asyncify", state["runtime"]
    assert state["runtime"]["webgpuDevice"] is not None, "onnxruntime-web created no WebGPU device"
    assert {s["device"] for s in state["sessions"].values()} == {"webgpu"}, state["sessions"]
    run = state["lastRun"]
    assert run["device"] == "webgpu" and run["dtype"] == dtype, run
    assert run["newIds"] == python_greedy(site / variant["path"], dtype, run["promptIds"], MAX_NEW_TOKENS)
    print(f"\n{dtype} on WebGPU ({state['adapter']['vendor']} {state['adapter']['architecture']}): load "
          f"{state['loadMs']:.0f} ms, first token {run['firstTokenMs']:.0f} ms, {run['tokensPerSecond']:.2f} tokens/s")


def test_f16_dtype_without_shader_f16_runs_on_wasm_and_says_why(site: Path, origin: str) -> None:
    """q4f16 on an adapter without shader-f16 (SwiftShader) would fail at its first run: picked by the user, it
    moves to WASM and the page says why; with shader-f16 it stays on WebGPU."""
    result = drive(f"{origin}/?backend=webgpu", ARTIFACTS / "browser-webgpu-q4f16.png", "--webgpu", "--dtype", "q4f16",
                   "--max-new-tokens", "4", "--timeout", "240000", timeout=400)
    assert result.get("failure") is None, result
    assert result["error"] is None, result["error"]
    state = result["matslice"]
    if state["adapter"] and state["adapter"]["shaderF16"]:
        assert state["backend"] == "webgpu", state["backendReason"]
    else:
        assert state["backend"] == "wasm", state["backendReason"]
        assert "shader-f16" in state["backendReason"], state["backendReason"]
    assert state["lastRun"]["dtype"] == "q4f16"


def test_q4_and_q8_bundle_runs_q8_on_wasm_and_q4_on_webgpu(site: Path, origin: str) -> None:
    """Nobody picked a dtype: WASM (no 4-bit matrix kernel) takes q8 and says why, with Python's q8 ids; WebGPU keeps
    the bundle's default, q4."""
    variant = default_variant(site)
    assert variant["dtypes"][:2] == ["q4", "q8"] and variant["default_dtype"] == "q4"
    wasm = drive(f"{origin}/?backend=wasm", ARTIFACTS / "browser-wasm-prefers-q8.png", "--prompt", PROMPT,
                 "--max-new-tokens", "8")
    assert wasm.get("failure") is None and wasm["error"] is None, wasm
    state = wasm["matslice"]
    assert state["backend"] == "wasm" and state["lastRun"]["dtype"] == "q8", state["backendReason"]
    assert "q8 is used rather than q4" in state["backendReason"], state["backendReason"]
    run = state["lastRun"]
    assert run["newIds"] == python_greedy(site / variant["path"], "q8", run["promptIds"], 8)
    gpu = drive(f"{origin}/", ARTIFACTS / "browser-webgpu-keeps-q4.png", "--webgpu", "--max-new-tokens", "2",
                "--timeout", "240000", timeout=400)
    assert gpu.get("failure") is None and gpu["error"] is None, gpu
    assert gpu["matslice"]["backend"] == "webgpu" and gpu["matslice"]["lastRun"]["dtype"] == "q4", gpu["backendLine"]


def test_adapter_limits_below_the_largest_tensor_move_to_wasm_and_say_why(site: Path, origin: str) -> None:
    """An adapter whose buffers cannot hold the largest tensor the load puts in one (a small GPU's): WASM, with the
    adapter's limit, the tensor and its session named on the page."""
    result = drive(f"{origin}/", ARTIFACTS / "browser-adapter-too-small.png", "--webgpu", "--adapter-limit", "65536",
                   "--max-new-tokens", "2", "--timeout", "240000", timeout=400)
    assert result.get("failure") is None and result["error"] is None, result
    state = result["matslice"]
    assert state["adapter"]["maxStorageBufferBindingSize"] == 65536, state["adapter"]
    assert state["backend"] == "wasm" and state["lastRun"]["device"] == "wasm", state["backendReason"]
    reason = state["backendReason"]
    assert "allows 0.07 MB per storage-buffer binding" in reason and "the largest" in reason, reason
    assert "running on the CPU with WASM" in reason, reason


def test_a_dtype_whose_ops_wasm_lacks_falls_back_by_name(site: Path, tmp_path: Path) -> None:
    """A bundle whose q4 graphs use an operator onnxruntime-web's WASM build lacks (manifest.json's dtype_info
    not_on_wasm, as the exporter writes it for such graphs): q4 asked for on WASM moves to q8, and the page names the
    operator."""
    copy = tmp_path / "web"
    shutil.copytree(site, copy)
    path = copy / default_variant(copy)["path"] / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["dtype_info"]["q4"]["not_on_wasm"] = ["GatherBlockQuantized"]
    path.write_text(json.dumps(manifest))
    with serving(copy) as origin:
        result = drive(f"{origin}/?backend=wasm&dtype=q4", ARTIFACTS / "browser-op-not-on-wasm.png",
                       "--max-new-tokens", "2")
    assert result.get("failure") is None and result["error"] is None, result
    state = result["matslice"]
    assert state["lastRun"]["dtype"] == "q8", state["backendReason"]
    assert "q4 needs WebGPU (GatherBlockQuantized has no WASM kernel), so q8 is used" in state["backendReason"]


class NotIsolatedHandler(IsolatedHandler):
    """The static server without the COOP/COEP headers: what a plain static host sends."""

    def end_headers(self) -> None:
        SimpleHTTPRequestHandler.end_headers(self)


def test_without_cross_origin_isolation_wasm_runs_single_threaded_and_says_so(site: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(NotIsolatedHandler, directory=str(site)))
    server.quiet = True  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = drive(f"http://127.0.0.1:{server.server_address[1]}/?backend=wasm", ARTIFACTS / "browser-single.png",
                       "--prompt", PROMPT, "--max-new-tokens", "8")
    finally:
        server.shutdown()
        server.server_close()
    assert result.get("failure") is None and result["error"] is None, result
    assert "Not cross-origin isolated: WASM runs single-threaded" in result["isolation"], result["isolation"]
    state = result["matslice"]
    assert state["runtime"]["threads"] == 1 and state["ready"], state["runtime"]
    run = state["lastRun"]
    assert run["newIds"] == python_greedy(site / default_variant(site)["path"], run["dtype"], run["promptIds"], 8)


@pytest.fixture(scope="module")
def vocab_site() -> Path:
    """The default model's E2B-like slice with its vocabulary cut to 1,024 text ids of its own training text."""
    from standins.corpus import load_corpus

    corpus = folder("test-sites") / "vocab-corpus.txt"
    text = "\n".join(load_corpus().train[:2000]) + "\n"
    if not corpus.is_file() or corpus.read_text() != text:
        corpus.parent.mkdir(parents=True, exist_ok=True)
        corpus.write_text(text)
    return build_site("vocab", "--no-parent", "--vocab-corpus", str(corpus), "--vocab-size", "1024")


def test_vocabulary_cut_bundle_matches_onnxruntime(vocab_site: Path) -> None:
    """A vocabulary-cut bundle in the page: its card says what was kept, transformers.js tokenizes the chat prompt
    as Python's tokenizer does from the same files, and the greedy ids equal onnxruntime-Python's."""
    variant = default_variant(vocab_site)
    vocab = variant["slice"]["vocab"]
    assert vocab["kept_text_ids"] <= 1024 < vocab["parent_text_ids"], vocab
    with serving(vocab_site) as origin:
        result = drive(f"{origin}/?backend=wasm&dtype=q4", ARTIFACTS / "browser-vocab-cut.png", "--prompt", PROMPT,
                       "--max-new-tokens", str(MAX_NEW_TOKENS))
    assert result.get("failure") is None and result["error"] is None, result
    line = f"vocabulary{vocab['kept_text_ids']:,} of {vocab['parent_text_ids']:,} tokens, from: vocab-corpus.txt"
    assert line in result["variants"], result["variants"]
    run = result["matslice"]["lastRun"]
    bundle = vocab_site / variant["path"]
    assert run["promptIds"] == chat_prompt_ids(bundle)
    assert run["newIds"] == python_greedy(bundle, "q4", run["promptIds"], MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def audio_site(tiny_multimodal: Path) -> Path:
    """A site whose variant kept audio (the tiny model, one layer dropped), fp32 so ids compare exactly."""
    return build_site("audio", "--model", str(tiny_multimodal), "--no-parent", "--layers-to-skip", "6", "--name",
                      "audio", "--dtype", "fp32")


def test_audio_through_the_file_input(audio_site: Path, tmp_path: Path) -> None:
    """A WAV given through the page's file input: the page's ids equal onnxruntime-Python's and transformers.js-in-
    Node's, both fed the features Python's processor makes of the same clip."""
    from transformers import AutoProcessor

    from web_export.node import node_generate

    rate, seconds = 16_000, 1.0
    t = np.arange(int(rate * seconds)) / rate
    clip = (0.4 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    wav = tmp_path / "clip.wav"
    with wave.open(str(wav), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((clip * 32767).astype(np.int16).tobytes())
    with serving(audio_site) as origin:
        result = drive(f"{origin}/?backend=wasm", ARTIFACTS / "browser-audio.png", "--with-audio", "--audio", str(wav),
                       "--prompt", "what is this?", "--max-new-tokens", "8", timeout=300)
    assert result.get("failure") is None, result
    assert result["error"] is None, result["error"]
    run = result["matslice"]["lastRun"]
    bundle = audio_site / default_variant(audio_site)["path"]
    config = json.loads((bundle / "config.json").read_text())
    assert config["audio_token_id"] in run["promptIds"], "the page's prompt carries no audio soft tokens"
    from evaluation.data import read_wav  # int16 / 32768, as the browser decodes it

    features = AutoProcessor.from_pretrained(bundle).feature_extractor(read_wav(wav), sampling_rate=rate,
                                                                      return_tensors="np")
    prompt = Prompt(run["promptIds"], input_features=features["input_features"],
                    input_features_mask=features["input_features_mask"])
    _, python_ids = BundleRuntime.from_bundle(bundle, "fp32").greedy(prompt, steps=len(run["newIds"]) - 1)
    node = node_generate(bundle, dtype="fp32", ids=run["promptIds"], max_new_tokens=len(run["newIds"]),
                         model_class="conditional", inputs={"input_features": features["input_features"],
                                                            "input_features_mask": features["input_features_mask"]})
    stop = next((i for i, t in enumerate(python_ids) if t in EOS_IDS), len(python_ids) - 1)
    assert run["newIds"] == python_ids[: stop + 1] == node["new_ids"], (run["newIds"], python_ids, node["new_ids"])


# --- Streamed embeddings (matslice export --embeddings streamed) and the loader module -----------------------------
STREAMED_PROMPT = "Hello wörld, ¿qué tal? 東京の歴史"  # ids outside the English corner of the vocabulary too


@pytest.fixture(scope="module")
def streamed_site() -> Path:
    return build_site("streamed", "--no-parent", "--dtype", "q4,q8", "--embeddings", "streamed")


def test_streamed_bundle_gives_the_bundled_ids_on_wasm_and_webgpu(site: Path, origin: str,
                                                                   streamed_site: Path) -> None:
    """The default slice with its embedding rows streamed: on WASM (q8) and WebGPU (q4) the page's greedy ids equal
    onnxruntime-Python's on the bundled bundle and the bundled page's, for a prompt with characters outside English;
    no embedding table is downloaded; a second visit fetches no row again (the Cache API holds them)."""
    bundled = site / default_variant(site)["path"]
    args = ("--prompt", STREAMED_PROMPT, "--max-new-tokens", str(MAX_NEW_TOKENS))
    on_bundled = drive(f"{origin}/?backend=wasm", ARTIFACTS / "browser-bundled-q8.png", *args)["matslice"]["lastRun"]
    with serving(streamed_site) as streamed_origin:
        wasm = drive(f"{streamed_origin}/?backend=wasm", ARTIFACTS / "browser-streamed-wasm.png", *args,
                     "--visits", "2")
        gpu = drive(f"{streamed_origin}/", ARTIFACTS / "browser-streamed-webgpu.png", *args, "--webgpu")
    for result in (wasm, gpu):
        assert result.get("failure") is None and result["error"] is None, {k: result.get(k) for k in
                                                                          ("failure", "error", "console")}
    first, second = (visit["lastRun"] for visit in wasm["visits"])
    assert first["dtype"] == "q8" and first["device"] == "wasm"
    assert first["newIds"] == on_bundled["newIds"] == python_greedy(bundled, "q8", first["promptIds"], MAX_NEW_TOKENS)
    assert first["rows"]["fetchedBlocks"] > 0 and first["rows"]["cachedBlocks"] == 0
    assert second["newIds"] == first["newIds"]
    assert second["rows"]["fetchedBytes"] == 0 and second["rows"]["cachedBlocks"] == first["rows"]["fetchedBlocks"]
    assert not any(".onnx_data" in url and "embed_tokens" in url for url in wasm["requests"])
    run = gpu["matslice"]["lastRun"]
    assert gpu["matslice"]["backend"] == "webgpu" and run["dtype"] == "q4", gpu["backendLine"]
    assert run["newIds"] == python_greedy(bundled, "q4", run["promptIds"], MAX_NEW_TOKENS)
    assert wasm["matslice"]["sessions"]["embed_tokens"] == {"streamed": True,
                                                            "rows": "onnx/embed_tokens_quantized.rows"}


def test_streamed_vocabulary_cut_bundle_matches_the_bundled_one(vocab_site: Path) -> None:
    variant = default_variant(vocab_site)
    corpus = folder("test-sites") / "vocab-corpus.txt"
    streamed = build_site("vocab-streamed", "--no-parent", "--vocab-corpus", str(corpus), "--vocab-size", "1024",
                          "--embeddings", "streamed")
    with serving(streamed) as origin:
        result = drive(f"{origin}/?backend=wasm&dtype=q4", ARTIFACTS / "browser-vocab-streamed.png", "--prompt",
                       STREAMED_PROMPT, "--max-new-tokens", str(MAX_NEW_TOKENS))
    assert result.get("failure") is None and result["error"] is None, result
    run = result["matslice"]["lastRun"]
    assert run["rows"]["fetchedBlocks"] > 0
    assert run["newIds"] == python_greedy(vocab_site / variant["path"], "q4", run["promptIds"], MAX_NEW_TOKENS)


def test_a_host_that_ignores_range_is_named(streamed_site: Path) -> None:
    """Served by a host that answers Range with the whole file: a row file that fits is read whole and the page says
    so; one over the limit (?whole-rows-limit) is refused with what to do, and nothing loads."""
    with serving(streamed_site, ranges=False) as origin:
        fits = drive(f"{origin}/?backend=wasm", ARTIFACTS / "browser-no-range.png", "--max-new-tokens", "4")
        refused = drive(f"{origin}/?backend=wasm&whole-rows-limit=1000", ARTIFACTS / "browser-no-range-refused.png",
                        "--expect", "error")
    assert fits["error"] is None and fits["matslice"]["ready"], fits
    assert "The host ignores HTTP Range" in fits["matslice"]["rows"]["note"]
    assert refused["matslice"]["ready"] is False
    assert "embed_tokens_quantized.rows was served whole (HTTP 200) for a Range request" in refused["error"]
    assert "nox -s serve" in refused["error"]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("<!-- example page: begin -->")[1].split("<!-- example page: end -->")[0].split("```html")[1] \
        .split("```")[0]


def test_the_readme_example_page_runs(site: Path, tmp_path: Path) -> None:
    """README's page of one's own, saved beside matslice.js: the loader's generate gives onnxruntime-Python's ids,
    and transformers.js's own model.generate on the loader's objects works as usual. The 32 tokens are compared
    with `ids_match`: onnxruntime-web's WASM int8 kernels and the CPU provider's part at a near tie of the
    reference (measured: the 9th token, top-2 gap 0.011), which is accepted after 4 equal steps and reported."""
    copy = tmp_path / "web"
    shutil.copytree(site, copy, copy_function=os.link)
    (copy / "my-page.html").write_text(readme_example())
    with serving(copy) as origin:
        result = drive(f"{origin}/my-page.html", ARTIFACTS / "browser-example-page.png", "--wait-for", "example")
    assert result.get("failure") is None, {k: result.get(k) for k in ("failure", "console")}
    page = result["page"]
    bundle = site / default_variant(site)["path"]
    run = page["run"]
    runner = BundleRuntime.from_bundle(bundle, run["dtype"])
    logits, want = runner.greedy(Prompt(run["promptIds"]), steps=len(run["newIds"]) - 1)
    gaps = [float(np.diff(np.sort(row[-1])[-2:])[0]) for row in logits]
    compared = ids_match(run["newIds"], want, gaps)
    assert compared.match and compared.steps >= 8, compared
    assert page["ids"][len(page["promptIds"]):] == python_greedy(bundle, run["dtype"], page["promptIds"], 8)
    assert run["text"] and run["text"] in result["text"]
