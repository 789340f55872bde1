"""Streamed embeddings: a bundle whose embed_tokens tables are a row file computes, in site/matslice.js (run in Node
against the served bundle) and in web_export/rows.py's numpy decoder, what the bundled embed_tokens session computes
in onnxruntime, for every id of the tiny multimodal model (text, vision and audio ids) in every dtype a row file
holds; the file is deterministic, `plan` predicts it to the byte, the stand-in session names it when run without the
loader, and the loader refuses a file it cannot trust."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers import serving

from gemma3n.errors import UserError
from gemma3n.rows import check_streamable
from web_export.bundle import write_bundle
from web_export.manifest import Manifest
from web_export.node import run_script
from web_export.rows import decode, read_header

DTYPES = ("q4", "q8", "fp32")
TOLERANCE = 1e-5  # what the issue allows; measured: 0.0 (the loader repeats the session's float32 products)


@pytest.fixture(scope="module")
def bundles(tiny_multimodal: Path, tiny_multimodal_graphs: list, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny multimodal checkpoint at q4, q8 and fp32: bundled, and streamed, from one trace."""
    root = tmp_path_factory.mktemp("rows")
    bundled = write_bundle(tiny_multimodal, root / "bundled", dtypes=DTYPES, graphs=tiny_multimodal_graphs)
    streamed = write_bundle(tiny_multimodal, root / "streamed", dtypes=DTYPES, graphs=tiny_multimodal_graphs,
                            embeddings="streamed")
    return bundled, streamed


def session_embeddings(bundle: Path, dtype: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    record = Manifest.load(bundle).session("embed_tokens", dtype)
    session = ort.InferenceSession(str(bundle / record["file"]), providers=["CPUExecutionProvider"])
    embeds, per_layer = session.run(None, {"input_ids": ids[None].astype(np.int64)})
    return embeds[0], per_layer[0]


def loader_embeddings(url: str, dtype: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    out = run_script("rows.mjs", [url, dtype, ",".join(map(str, ids))])
    dims = out["dims"]
    embeds = np.frombuffer(base64.b64decode(out["inputs_embeds"]), "<f4").reshape(dims["ids"], dims["hidden"])
    layers = np.frombuffer(base64.b64decode(out["per_layer_inputs"]), "<f4")
    return embeds, layers.reshape(dims["ids"], dims["layers"], dims["per_layer"]), out["stats"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_loader_computes_what_the_session_computes(bundles: tuple[Path, Path], dtype: str) -> None:
    bundled, streamed = bundles
    manifest = Manifest.load(streamed)
    header = read_header(streamed / manifest.session("embed_tokens", dtype)["rows"]["file"])
    assert header.hard_start is not None and header.hard_rows > 0  # the vision and audio ids have their own rows
    ids = np.arange(header.vocab_size)[::-1]  # every id, text, vision and audio, out of order
    want = session_embeddings(bundled, dtype, ids)
    with serving(streamed) as origin:
        *got, stats = loader_embeddings(origin + "/", dtype, ids)
    for name, a, b in zip(("inputs_embeds", "per_layer_inputs"), got, want, strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() <= TOLERANCE, (dtype, name, np.abs(a - b).max())
    for a, b in zip(decode(streamed / header_file(manifest, dtype), ids), want, strict=True):
        assert np.abs(a - b).max() <= TOLERANCE
    assert stats["fetchedBlocks"] == header.blocks  # every block once, in adjacent runs
    assert stats["requests"] < header.blocks


def header_file(manifest: Manifest, dtype: str) -> str:
    return manifest.session("embed_tokens", dtype)["rows"]["file"]


def test_blocks_are_small_and_one_row_verifies_one_block(bundles: tuple[Path, Path]) -> None:
    _, streamed = bundles
    manifest = Manifest.load(streamed)
    for dtype in DTYPES:
        header = read_header(streamed / header_file(manifest, dtype))
        assert header.records_per_block * header.record_bytes <= 64 << 10
        assert header.hard_per_block * header.hidden_size * 4 <= 64 << 10
        with serving(streamed) as origin:
            *_, stats = loader_embeddings(origin + "/", dtype, np.array([5]))
        records = min(header.records_per_block, header.vocab_size)
        assert stats["fetchedBlocks"] == 1 and stats["fetchedBytes"] == records * header.record_bytes


def test_streamed_bundle_layout_and_manifest(bundles: tuple[Path, Path]) -> None:
    bundled, streamed = bundles
    manifest = Manifest.load(streamed)
    assert manifest.data["embeddings"] == "streamed" and Manifest.load(bundled).data["embeddings"] == "bundled"
    for dtype in DTYPES:
        record = manifest.session("embed_tokens", dtype)
        rows = record["rows"]
        assert record["data_files"] == [] and record["external_data_chunks"] == 0
        assert (streamed / rows["file"]).stat().st_size == rows["bytes"] == manifest.files()[rows["file"]]
        assert record["bytes"] == (streamed / record["file"]).stat().st_size + rows["index_end"]
        # the other sessions are the bundled bundle's, byte for byte
        for session in manifest.sessions:
            if session != "embed_tokens":
                assert manifest.session(session, dtype) == Manifest.load(bundled).session(session, dtype)
    assert manifest.download("q4") < Manifest.load(bundled).download("q4")


def test_row_files_are_deterministic(bundles: tuple[Path, Path], tiny_multimodal: Path, tiny_multimodal_graphs: list,
                                     tmp_path: Path) -> None:
    _, streamed = bundles
    again = write_bundle(tiny_multimodal, tmp_path / "again", dtypes=("q4",), graphs=tiny_multimodal_graphs,
                         embeddings="streamed")
    name = header_file(Manifest.load(again), "q4")
    assert (again / name).read_bytes() == (streamed / name).read_bytes()


def test_plan_predicts_the_streamed_bundle(bundles: tuple[Path, Path], tiny_multimodal: Path) -> None:
    """`plan --embeddings streamed` gives the row file's bytes exactly and what a page downloads within 1 %."""
    _, streamed = bundles
    manifest = Manifest.load(streamed)
    done = subprocess.run([sys.executable, "-m", "matslice", "plan", str(tiny_multimodal), "--dtype", ",".join(DTYPES),
                           "--embeddings", "streamed", "--json"], capture_output=True, text=True, check=True)
    predicted = json.loads(done.stdout)["bundle"]
    for dtype in DTYPES:
        assert predicted["sessions"]["embed_tokens"][dtype]["rows_bytes"] == manifest.session(
            "embed_tokens", dtype)["rows"]["bytes"]
        assert abs(predicted["download"][dtype]["all"] / manifest.download(dtype) - 1) < 0.01


def test_stand_in_session_names_the_row_file(bundles: tuple[Path, Path]) -> None:
    """Run without MatSlice's loader, the streamed bundle's embed_tokens fails at the first token, naming why."""
    _, streamed = bundles
    record = Manifest.load(streamed).session("embed_tokens", "q4")
    session = ort.InferenceSession(str(streamed / record["file"]), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="embeddings_are_streamed_from_embed_tokens_q4_rows_load_with_site_matslice_js"):
        session.run(None, {"input_ids": np.array([[2, 5]], np.int64)})


def test_loader_refuses_what_it_cannot_trust(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    """A corrupt block is named with its bytes; a row file from another variant is refused by its header; a host
    that ignores Range is used whole only when the file fits (Node has no tab limit to test: the page test does)."""
    _, streamed = bundles
    copy = Path(shutil.copytree(streamed, tmp_path / "copy"))
    manifest = Manifest.load(copy)
    name = header_file(manifest, "q4")
    header = read_header(copy / name)
    data = bytearray((copy / name).read_bytes())
    last = header.blocks - 1  # the hard rows' block: the vision and audio ids'
    data[header.hard_offset + 7] ^= 0x40
    (copy / name).write_bytes(bytes(data))
    with serving(copy) as origin:
        loader_embeddings(origin + "/", "q4", np.array([5]))  # a text id: its block is intact
        corrupt = rf"embed_tokens_q4.rows is corrupt: block {last} \(bytes {header.hard_offset}-"
        with pytest.raises(RuntimeError, match=corrupt):
            loader_embeddings(origin + "/", "q4", np.array([header.hard_start]))
    shutil.copyfile(streamed / header_file(manifest, "q8"), copy / name)  # the q8 rows under the q4 name
    with serving(copy) as origin, pytest.raises(RuntimeError, match="belongs to another variant"):
        loader_embeddings(origin + "/", "q4", np.array([5]))
    with serving(streamed, ranges=False) as origin:  # small enough to be read whole
        *_, stats = loader_embeddings(origin + "/", "q4", np.array([5, 6]))
    assert stats["fetchedBytes"] == manifest.session("embed_tokens", "q4")["rows"]["bytes"]


def test_streamed_float16_dtypes_are_refused_before_any_work(tiny_multimodal: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "matslice", "export", str(tiny_multimodal), str(tmp_path / "out"),
                           "--dtype", "q4,q4f16", "--embeddings", "streamed"], capture_output=True, text=True)
    assert done.returncode != 0 and not (tmp_path / "out").exists()
    assert "--embeddings streamed supports q4, q8 and fp32 bundles, not q4f16" in done.stderr, done.stderr
    with pytest.raises(UserError, match="not fp16"):
        check_streamable("fp16")


def test_python_runtime_reads_the_row_file(bundles: tuple[Path, Path]) -> None:
    """onnxruntime in Python (`matslice verify`, the benchmarks) runs a streamed bundle through its row file: the
    same greedy ids and logits as the bundled bundle."""
    from web_export.runtime import BundleRuntime, Prompt

    bundled, streamed = bundles
    prompt = Prompt([2, 5, 40, 41, 42, 256, 272, 43])  # text, a vision and an audio id
    for dtype in ("q4", "fp32"):
        want_logits, want = BundleRuntime.from_bundle(bundled, dtype).greedy(prompt, steps=6)
        runtime = BundleRuntime.from_bundle(streamed, dtype)
        assert "embed_tokens" not in runtime.sessions and runtime.rows is not None
        got_logits, got = runtime.greedy(prompt, steps=6)
        assert got == want
        assert max(float(np.abs(a - b).max()) for a, b in zip(got_logits, want_logits, strict=True)) <= 1e-5
