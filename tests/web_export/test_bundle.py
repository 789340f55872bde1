"""Bundles of the tiny checkpoints: layout transformers.js expects, manifest, determinism, and Node == PyTorch.

The Node tests run transformers.js 4.3.1 from node/ (web_export/node.py installs it with `npm ci --ignore-scripts`);
without Node.js they skip and say so. fp32 greedy ids must equal PyTorch's exactly; q4 is only required to load and
generate here, since 4-bit rounding of random weights changes the argmax (web_export/TRAPS.md); `matslice verify`
checks q4 exactly against PyTorch on the dequantized weights (tests/evaluation/test_verify.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import assert_plan_exact

from evaluation.parity import TorchInputs, fixed_inputs, torch_greedy
from gemma3n.config import parse_config
from gemma3n.safetensors import read_tensors
from web_export.bundle import write_bundle
from web_export.checkpoint import load_parts
from web_export.chunks import external_chunk_count
from web_export.graph import check_tensor_limit
from web_export.node import node_generate
from web_export.quantize import quantize

DTYPES = ("fp32", "q4")
TEXT_SESSIONS = ("embed_tokens", "decoder_model_merged")
ALL_SESSIONS = (*TEXT_SESSIONS, "audio_encoder", "vision_encoder")
HELLO_WORLD = [2, 48, 77, 84, 84, 87, 118, 87, 90, 84, 76]  # the tiny tokenizer's "<bos>Hello world"
STEPS = 15  # prompt + 16 new tokens passes the tiny model's 16-token sliding window

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH: install Node.js 20+")


@pytest.fixture(scope="module")
def text_bundle(tiny_text: Path, tiny_text_graphs: list, tmp_path_factory) -> Path:
    return write_bundle(tiny_text, tmp_path_factory.mktemp("bundles") / "text", dtypes=DTYPES, graphs=tiny_text_graphs)


@pytest.fixture(scope="module")
def mm_bundle(tiny_multimodal: Path, tiny_multimodal_graphs: list, tmp_path_factory) -> Path:
    return write_bundle(tiny_multimodal, tmp_path_factory.mktemp("bundles") / "multimodal", dtypes=DTYPES,
                        graphs=tiny_multimodal_graphs)


def expected_onnx_files(sessions: tuple[str, ...]) -> set[str]:
    suffixes = {"fp32": "", "q4": "_q4"}
    return {f"onnx/{s}{suffixes[d]}.onnx{ext}" for s in sessions for d in DTYPES for ext in ("", "_data")}


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def read(root: Path, name: str) -> dict:
    return json.loads((root / name).read_text())


def test_text_layout(text_bundle: Path) -> None:
    side = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
    assert files_under(text_bundle) == side | {"manifest.json"} | expected_onnx_files(TEXT_SESSIONS)


def test_multimodal_layout(mm_bundle: Path) -> None:
    side = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
    side |= {"preprocessor_config.json", "processor_config.json"}
    assert files_under(mm_bundle) == side | {"manifest.json"} | expected_onnx_files(ALL_SESSIONS)


@pytest.mark.parametrize("which", ["text", "mm"])
def test_config_declares_what_transformers_js_reads(which: str, request) -> None:
    bundle = request.getfixturevalue(f"{which}_bundle")
    config = read(bundle, "config.json")
    sessions = TEXT_SESSIONS if which == "text" else ALL_SESSIONS
    assert config["model_type"] == "gemma3n"
    assert config["architectures"] == ["Gemma3nForConditionalGeneration"]
    assert config["text_config"]["model_type"] == "gemma3n_text"
    js = config["transformers.js_config"]
    assert js["dtype"] == {s: DTYPES[0] for s in sessions}
    onnx_files = sorted(p for p in (bundle / "onnx").glob("*.onnx"))
    assert js["use_external_data_format"] == {p.name: external_chunk_count(p) for p in onnx_files}
    for path in onnx_files:
        chunks = sorted(path.parent.glob(path.name + "_data*"))
        assert len(chunks) == js["use_external_data_format"][path.name]


@pytest.mark.parametrize("which", ["text", "mm"])
def test_manifest_lists_every_file(which: str, request) -> None:
    bundle = request.getfixturevalue(f"{which}_bundle")
    source = request.getfixturevalue("tiny_text" if which == "text" else "tiny_multimodal")
    manifest = read(bundle, "manifest.json")
    assert set(manifest["files"]) == files_under(bundle) - {"manifest.json"}
    for name, record in manifest["files"].items():
        data = (bundle / name).read_bytes()
        piece = manifest["piece_bytes"]
        pieces = [hashlib.sha256(data[i:i + piece]).hexdigest() for i in range(0, max(len(data), 1), piece)]
        assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pieces": pieces}
    source_config = read(source, "config.json")
    tensors = read_tensors(source)  # counted from the checkpoint's own headers, not from the config
    prefix = parse_config(source_config, "test").text_prefix
    assert manifest["params"]["text"] == sum(math.prod(t.shape) for n, t in tensors.items() if n.startswith(prefix))
    audio = sum(math.prod(t.shape) for n, t in tensors.items() if n.startswith("model.audio_tower."))
    assert manifest["params"]["audio"] == audio
    assert manifest["matslice"] == source_config.get("matslice")
    assert manifest["dtypes"] == list(DTYPES)
    for variants in manifest["sessions"].values():
        for record in variants.values():
            names = [record["file"], *record["data_files"]]
            assert record["bytes"] == sum(manifest["files"][f]["bytes"] for f in names)
            assert 0 < record["largest_tensor"]["bytes"] <= manifest["largest_tensor"]["bytes"]


def test_no_build_paths_in_graphs(text_bundle: Path, tiny_text: Path) -> None:
    for path in (text_bundle / "onnx").glob("*.onnx"):
        data = path.read_bytes()
        assert str(Path.cwd()).encode() not in data
        assert str(tiny_text).encode() not in data
        assert not onnx.load(path, load_external_data=False).metadata_props


def test_q4_uses_block_quantized_kernels(mm_bundle: Path) -> None:
    ops = {name: op_types(mm_bundle / "onnx" / f"{name}_q4.onnx") for name in TEXT_SESSIONS}
    assert {"BitwiseAnd", "BitShift"} <= ops["embed_tokens"]  # 4-bit lookups from standard ops
    assert "GatherBlockQuantized" not in ops["embed_tokens"]  # no WASM kernel in onnxruntime-web
    assert "MatMulNBits" in ops["decoder_model_merged"]
    manifest = read(mm_bundle, "manifest.json")["sessions"]
    for name in ALL_SESSIONS:
        assert manifest[name]["q4"]["bytes"] < manifest[name]["fp32"]["bytes"]


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(path, load_external_data=False).graph.node}


def test_text_bundle_is_deterministic(tiny_text: Path, text_bundle: Path, tmp_path: Path) -> None:
    """Traced again, in this one process: the same files (the manifest holds every file's sha256) as the bundle
    whose sessions were traced in parallel processes (one per CPU, so at least two on CI's machine)."""
    from web_export.export import available_cpus, trace_sessions

    assert available_cpus() >= 2, "this machine traces in one process: the comparison below would be with itself"
    again = write_bundle(tiny_text, tmp_path / "again", dtypes=DTYPES, graphs=trace_sessions(tiny_text, workers=1))
    assert read(again, "manifest.json") == read(text_bundle, "manifest.json")


def test_multimodal_quantization_is_deterministic(mm_bundle: Path, tmp_path: Path) -> None:
    """Quantizing each fp32 session of the multimodal bundle twice gives the same bytes, and the same outputs as
    the bundle's own q4 files, which were written from the checkpoint (export determinism itself is covered by
    the text bundle rebuild, which is much cheaper)."""
    for name in ("embed_tokens", "audio_encoder", "vision_encoder"):
        first, second = (quantize(mm_bundle / "onnx" / f"{name}.onnx", "q4", tmp_path / run_ / f"{name}_q4.onnx")
                         for run_ in ("first", "second"))
        for suffix in ("", "_data"):
            assert Path(f"{first}{suffix}").read_bytes() == Path(f"{second}{suffix}").read_bytes()
        feeds = example_feeds(mm_bundle / "onnx" / f"{name}.onnx")
        for a, b in zip(run(first, feeds), run(mm_bundle / "onnx" / f"{name}_q4.onnx", feeds), strict=True):
            np.testing.assert_array_equal(a, b)


def example_feeds(path: Path) -> dict[str, np.ndarray]:
    """Deterministic inputs for a session with one or two inputs (ids, features + mask, pixels)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for value in onnx.load(path, load_external_data=False).graph.input:
        dims = [d.dim_value or 3 for d in value.type.tensor_type.shape.dim]
        kind = value.type.tensor_type.elem_type
        if kind == onnx.TensorProto.INT64:
            feeds[value.name] = rng.integers(0, 200, dims).astype(np.int64)
        elif kind == onnx.TensorProto.BOOL:
            feeds[value.name] = np.ones(dims, dtype=bool)
        else:
            feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def test_chunked_external_data_round_trips(text_bundle: Path, tmp_path: Path) -> None:
    source = text_bundle / "onnx" / "embed_tokens.onnx"
    out = quantize(source, "fp32", tmp_path, max_file_bytes=150_000)
    assert external_chunk_count(out) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, out.name + "_data", out.name + "_data_1"]
    assert all(p.stat().st_size <= 150_000 for p in tmp_path.iterdir())
    feeds = {"input_ids": np.array([[2, 40, 77, 250, 287]], dtype=np.int64)}
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tables_bigger_than_a_chunk_are_split_and_unsplittable_ones_refused(text_bundle: Path, tmp_path: Path) -> None:
    """A table above the data chunk size is split by columns to fit one (same outputs); `check_tensor_limit`, the last
    guard, still refuses any tensor above the limit, which after the splits only a non-MatMul, non-table weight can
    be."""
    source = text_bundle / "onnx" / "embed_tokens.onnx"
    out = quantize(source, "fp32", tmp_path, max_file_bytes=100_000)
    model = onnx.load(out, load_external_data=False)
    assert max(onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize * math.prod(t.dims)
               for t in model.graph.initializer) <= 100_000
    assert "text_model.embed_tokens_per_layer.weight_part1" in {t.name for t in model.graph.initializer}
    feeds = {"input_ids": np.array([[2, 40, 77, 250, 287]], dtype=np.int64)}
    for a, b in zip(run(source, feeds), run(out, feeds), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="single-tensor limit"):
        check_tensor_limit(onnx.load(source), limit=100_000)


@pytest.mark.parametrize("which", ["text", "mm"])
def test_bundle_holds_what_the_plan_predicts(which: str, request) -> None:
    """`matslice plan`'s weight tensors, data bytes and largest tensor are the written ones, session by session."""
    bundle = request.getfixturevalue(f"{which}_bundle")
    checkpoint = request.getfixturevalue("tiny_text" if which == "text" else "tiny_multimodal")
    assert_plan_exact(bundle / "onnx", checkpoint, DTYPES)


def torch_ids(
    model_dir: Path, modalities: set[str], prompt: list[int] | None = None
) -> tuple[list[int], list[int], dict[str, np.ndarray]]:
    """(prompt ids, greedy ids cut after the first EOS, extra model inputs) from the PyTorch reference.

    The prompt is parity.fixed_inputs' unless given (text only).
    """
    parts = load_parts(model_dir)
    inputs = fixed_inputs(parts, modalities)
    if prompt is not None:
        inputs = TorchInputs(input_ids=torch.tensor([prompt]))
    _, ids = torch_greedy(parts, inputs, STEPS)
    eos = read(model_dir, "generation_config.json")["eos_token_id"]
    eos = set(eos if isinstance(eos, list) else [eos])
    cut = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
    names = ("input_features", "input_features_mask")
    extra = {k: getattr(inputs, k).numpy() for k in names if getattr(inputs, k) is not None}
    return inputs.input_ids[0].tolist(), ids[:cut], extra


@needs_node
def test_node_fp32_text_bundle_matches_torch(text_bundle: Path, tiny_text: Path) -> None:
    prompt, want, _ = torch_ids(tiny_text, set())
    assert len(want) == STEPS + 1
    got = node_generate(text_bundle, dtype="fp32", ids=prompt, max_new_tokens=STEPS + 1)
    assert got["new_ids"] == want


@needs_node
def test_node_fp32_multimodal_bundle_matches_torch_on_text(mm_bundle: Path, tiny_multimodal: Path) -> None:
    # "Hello world": fixed_inputs' text prompt hits EOS after 4 tokens on this checkpoint.
    prompt, want, _ = torch_ids(tiny_multimodal, set(), prompt=HELLO_WORLD)
    assert len(want) == STEPS + 1
    for model_class in ("causal", "conditional"):  # text sessions only, then all four sessions loaded
        got = node_generate(mm_bundle, dtype="fp32", ids=prompt, max_new_tokens=STEPS + 1, model_class=model_class)
        assert got["new_ids"] == want, model_class


@needs_node
def test_node_fp32_multimodal_bundle_matches_torch_on_audio(mm_bundle: Path, tiny_multimodal: Path) -> None:
    prompt, want, extra = torch_ids(tiny_multimodal, {"audio"})
    assert len(want) == STEPS + 1
    got = node_generate(
        mm_bundle, dtype="fp32", ids=prompt, max_new_tokens=STEPS + 1, model_class="conditional", inputs=extra
    )
    assert got["new_ids"] == want


@needs_node
def test_node_tokenizer_matches_python(text_bundle: Path, tiny_text: Path) -> None:
    from transformers import AutoTokenizer

    prompt = "Hello world"
    got = node_generate(text_bundle, dtype="fp32", prompt=prompt, max_new_tokens=1)
    assert got["tokenizer_ids"] == AutoTokenizer.from_pretrained(tiny_text)(prompt).input_ids == HELLO_WORLD


@needs_node
@pytest.mark.parametrize("which", ["text", "mm"])
def test_node_q4_bundle_matches_onnxruntime_python(which: str, request) -> None:
    """transformers.js in Node decodes the q4 bundle greedily to the ids onnxruntime-Python gets from the same files
    (both run onnxruntime's CPU kernels on the same graphs: measured equal for 8 of 8 steps)."""
    from web_export.runtime import BundleRuntime, Prompt

    bundle = request.getfixturevalue(f"{which}_bundle")
    got = node_generate(bundle, dtype="q4", ids=HELLO_WORLD, max_new_tokens=8)["new_ids"]
    _, want = BundleRuntime.from_bundle(bundle, "q4").greedy(Prompt(HELLO_WORLD), steps=7)
    eos = read(bundle, "generation_config.json")["eos_token_id"]
    stop = next((i for i, t in enumerate(want) if t in (eos if isinstance(eos, list) else [eos])), len(want) - 1)
    assert got == want[: stop + 1] and len(got) >= 1


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_q4_embedding_rows_stay_within_int4_rounding(text_bundle: Path) -> None:
    """The 4-bit lookup must dequantize the rows it gathers: symmetric blocks map the block's absmax to 7, so an
    element moves by at most half a step (1/14 of its block's absmax), hence within 1/8 of its row's largest
    entry. A wrong axis or nibble order would give errors of the order of the values."""
    feeds = {"input_ids": np.arange(256, dtype=np.int64)[None]}
    want = run(text_bundle / "onnx" / "embed_tokens.onnx", feeds)[0][0]
    got = run(text_bundle / "onnx" / "embed_tokens_q4.onnx", feeds)[0][0]
    scale = np.abs(want).max(-1, keepdims=True)
    assert (scale[1:] > 0).all()
    assert np.abs(got - want).max() > 0  # actually quantized
    assert (np.abs(got - want) <= scale / 8 * 1.01 + 1e-6).all()


@pytest.mark.parametrize("symmetric", [True, False])
def test_q4_matmul_matches_its_dequantized_weights(tmp_path: Path, symmetric: bool) -> None:
    """MatMul -> MatMulNBits on a one-node graph: the output equals x @ dequantized(W) (trap 8: check 4-bit
    kernels against the rounded weights, not against fp32), and stays within int4 rounding of x @ W."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 48)).astype(np.float32)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])],
        "one_matmul",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 48])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    source = tmp_path / "one.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)]), source)
    out = quantize(source, "q4", tmp_path / "one_q4.onnx", block_size=32, symmetric=symmetric)
    assert op_types(out) == {"MatMulNBits"}
    blocks = weight.reshape(2, 32, 48)  # blocks of 32 along K, per output column
    high, low = blocks.max(axis=1, keepdims=True), blocks.min(axis=1, keepdims=True)
    if symmetric:  # absmax -> 7, codes -8..7 (zero point 8)
        scales = np.maximum(np.abs(high), np.abs(low)) / 7
        dequantized = (np.clip(np.round(blocks / scales), -8, 7) * scales).reshape(64, 48)
    else:  # [min(low, 0), max(high, 0)] -> 0..15 around a rounded zero point
        scales = (np.maximum(high, 0) - np.minimum(low, 0)) / 15
        zero = np.round(-np.minimum(low, 0) / scales)
        dequantized = ((np.clip(np.round(blocks / scales) + zero, 0, 15) - zero) * scales).reshape(64, 48)
    got = run(out, {"x": x})[0]
    np.testing.assert_allclose(got, x @ dequantized, rtol=1e-4, atol=1e-4)
    assert np.abs(got - x @ weight).max() > 1e-3  # the weights were really rounded


def test_q8_matmul_equals_onnxruntime_quantize_dynamic(tmp_path: Path) -> None:
    """Our streamed q8 MatMul (per-tensor QUInt8 weights, activations quantized at run time) is the graph
    onnxruntime's quantize_dynamic builds: same outputs to the last bit, and really rounded."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 48)).astype(np.float32)
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "one_matmul",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 5, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 5, 48])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    source = tmp_path / "one.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)]), source)
    quantize_dynamic(source, tmp_path / "ort.onnx", op_types_to_quantize=["MatMul"], weight_type=QuantType.QUInt8)
    ours = quantize(source, "q8", tmp_path / "one_quantized.onnx")
    assert "MatMulInteger" in op_types(ours)
    got, want = run(ours, {"x": x})[0], run(tmp_path / "ort.onnx", {"x": x})[0]
    np.testing.assert_array_equal(got, want)
    assert np.abs(got - x @ weight).max() > 1e-3


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("split", [False, True])
def test_lookup_equals_its_dequantized_table(tmp_path: Path, bits: int, split: bool) -> None:
    """The rewritten Gather returns exactly the rows of the dequantized table (trap 8), also when the table is
    split into column parts to respect a per-tensor byte limit."""
    from web_export.lookup import dequantize_rows, quantize_rows

    limit = 100 * 32 * bits // 8 if split else None  # room for one 32-column block of codes per part
    rng = np.random.default_rng(1)
    table = rng.standard_normal((100, 96)).astype(np.float32)
    ids = np.array([[3, 99, 0, 42], [7, 7, 1, 64]], dtype=np.int64)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gather", ["table", "ids"], ["rows"])], "lookup",
        [onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["b", "s"])],
        [onnx.helper.make_tensor_value_info("rows", onnx.TensorProto.FLOAT, ["b", "s", 96])],
        [onnx.numpy_helper.from_array(table, "table")],
    )
    source = tmp_path / "table.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)]), source)
    path = quantize(source, "q4" if bits == 4 else "q8", tmp_path / "lookup.onnx", max_tensor_bytes=limit)
    model = onnx.load(path)
    biggest = max(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    assert limit is None or biggest <= limit
    assert "Gather" in op_types(path) and not any(t.name == "table" for t in model.graph.initializer)
    got = run(path, {"ids": ids})[0]
    parts = [(0, 96)] if limit is None else [(0, 32), (32, 64), (64, 96)]
    expected = np.concatenate([dequantize_rows(*quantize_rows(table[:, a:b], bits, 32), bits, 32)
                               for a, b in parts], axis=1)[ids]
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got - table[ids]).max() <= np.abs(table).max() / (14 if bits == 4 else 254) + 1e-6


def test_pieces_cover_every_byte(tmp_path: Path) -> None:
    """Per-piece hashes of a file longer than one piece (the manifest's pieces of large data files)."""
    from web_export.bundle import hashes

    data = np.random.default_rng(0).integers(0, 256, 2 * 1000 + 17, dtype=np.uint8).tobytes()
    (tmp_path / "f").write_bytes(data)
    whole, pieces = hashes(tmp_path / "f", piece_bytes=1000)
    assert whole == hashlib.sha256(data).hexdigest()
    assert pieces == [hashlib.sha256(data[i:i + 1000]).hexdigest() for i in (0, 1000, 2000)]


def test_manifest_download_is_every_file_a_page_fetches(text_bundle: Path, tmp_path: Path) -> None:
    """`Manifest.download(dtype)`: the side files and each session's .onnx file and data chunks at that dtype, counted
    on disk; every other dtype's files are left out. A missing, unreadable or foreign manifest is one error."""
    from gemma3n.errors import UserError
    from web_export.manifest import Manifest

    manifest = Manifest.load(text_bundle)
    on_disk = {p.relative_to(text_bundle).as_posix(): p.stat().st_size
               for p in text_bundle.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert manifest.files() == on_disk and manifest.total_bytes() == sum(on_disk.values())
    side = [name for name in on_disk if not name.startswith("onnx/")]
    assert "tokenizer.json" in side and "config.json" in side
    for dtype in manifest.dtypes:
        fetched = side + [name for session in manifest.sessions for name in
                          (manifest.session(session, dtype)["file"], *manifest.session(session, dtype)["data_files"])]
        assert manifest.download(dtype) == sum(on_disk[name] for name in fetched), dtype
        assert manifest.download(dtype, ["embed_tokens"]) < manifest.download(dtype)
    assert manifest.download("q4") < manifest.download("fp32") < manifest.total_bytes()
    for content, message in ((None, "has no manifest.json"), ("{not json", "cannot be read"),
                             ('{"sessions": {}}', "lacks dtypes, default_dtype, files")):
        folder = tmp_path / f"case-{message[:6].replace(' ', '-')}"
        folder.mkdir()
        if content is not None:
            (folder / "manifest.json").write_text(content)
        with pytest.raises(UserError, match=message):
            Manifest.load(folder)
