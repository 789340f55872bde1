"""`matslice plan` predicts the bundle `export` writes, without torch and without weights.

The weight bytes, per session and dtype, and the largest tensor must be exact: they are compared tensor by tensor
with tiny and nano-shaped exports (sliced: skipped layers, narrowed FFNs), with and without split weights; the
multimodal bundles of tests/web_export/test_bundle.py and tests/evaluation/test_verify.py, and the sliced audio
encoder of tests/web_export/test_audio_units.py, are checked the same way where they are written. The .onnx graph's
own bytes are estimated (slicer/data/graph_bytes.json): the total is held to 1 % on the nano-sized slice, which
is not one the model was calibrated on (measured: within 0.03 %), and to GRAPH_TOLERANCE_TINY on the tiny sessions,
where the graph is about half of the bytes (they are calibration samples, within 0.6 %; other tiny shapes may
stray further, since a few hundred bytes of graph are already a percent there).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_plan_exact

from gemma3n.config import e4b_config, load_config
from gemma3n.dtypes import DTYPES
from gemma3n.layout import (
    MAX_TENSOR_BYTES,
    MAX_UNPACKED_BYTES,
    aligned,
    data_file_bytes,
    gather_parts,
    matmul_parts,
    place,
)
from slicer.footprint import bundle_footprint, kv_cache_bytes, runtime_memory, session_weights
from slicer.plan import SliceSpec, make_plan
from slicer.presets import get_preset

NANO_SLICE = SliceSpec(layers_to_skip=(1, 8), ffn_dims=(512, 256, 256, 512, 384, 256, 128, 512))
GRAPH_TOLERANCE_TINY = 0.02  # of a tiny session's total bytes (half of which is graph)
SPLIT = {"q8": 9216}  # as tests/web_export/test_split.py: the smallest limits that split the tiny weights
SPLIT_LIMIT = 4608


def written_bytes(onnx_dir: Path, session: str, dtype: str) -> int:
    from web_export.quantize import variant_name

    path = onnx_dir / variant_name(session, dtype)
    return sum(p.stat().st_size for p in (path, *path.parent.glob(path.name + "_data*")))


# --- Exact against real exports -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_written(tiny_text_graphs: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from web_export.quantize import variant_name, write_variant

    root = tmp_path_factory.mktemp("tiny-footprint")
    for graph in tiny_text_graphs:
        for dtype in DTYPES:
            write_variant(graph, dtype, root / "default" / variant_name(graph.name, dtype))
            write_variant(graph, dtype, root / "split" / variant_name(graph.name, dtype),
                          max_tensor_bytes=SPLIT.get(dtype, SPLIT_LIMIT))
    return root


@pytest.fixture(scope="module")
def nano_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random nano-shaped checkpoint sliced (layer 1 and KV-sharing layer 8 dropped, mixed FFN widths) and exported
    in every dtype; returns the child (its bundle's onnx files are under child.parent / "onnx")."""
    from slicer.checkpoint import slice_checkpoint
    from standins.nano import write_random_nano
    from web_export.export import trace_sessions
    from web_export.quantize import variant_name, write_variant

    root = tmp_path_factory.mktemp("nano-footprint")
    parent = write_random_nano(root / "parent", seed=0)
    child = slice_checkpoint(parent, root / "child", make_plan(load_config(parent), NANO_SLICE), progress=False)
    for graph in trace_sessions(child):
        for dtype in DTYPES:
            write_variant(graph, dtype, root / "onnx" / variant_name(graph.name, dtype))
    return child


def test_session_weights_are_what_the_traced_graphs_read(tiny_text: Path, tiny_text_graphs: list) -> None:
    """Names, shapes and uses derived from the config equal the traced graphs' weights and the nodes reading them."""
    config = load_config(tiny_text)
    for graph in tiny_text_graphs:
        readers: dict[str, set[str]] = {}
        for node in graph.model.graph.node:
            for name in node.input:
                readers.setdefault(name, set()).add(node.op_type)
        weights = session_weights(config, graph.name)
        predicted = {w.name: (w.shape, w.use) for w in weights if w.use != "constant"}
        traced = {name: (source.shape, "gather" if "Gather" in readers[name] else
                         "matmul" if readers[name] == {"Transpose"} else "other")
                  for name, source in graph.weights.items()}
        assert predicted == traced, graph.name
        # Traced constants (the decoder's rotary tables) are initializers of the graph itself, not checkpoint reads.
        constants = {w.name: w.shape for w in weights if w.use == "constant"}
        initializers = {t.name: tuple(t.dims) for t in graph.model.graph.initializer}
        assert constants == {name: initializers.get(name) for name in constants}, graph.name
        assert bool(constants) == (graph.name == "decoder_model_merged")


@pytest.mark.parametrize("limits", ["default", "split"])
def test_tiny_text_bytes_are_exact(tiny_text: Path, tiny_written: Path, limits: str) -> None:
    for dtype in DTYPES:
        limit = SPLIT.get(dtype, SPLIT_LIMIT) if limits == "split" else MAX_TENSOR_BYTES
        assert_plan_exact(tiny_written / limits, tiny_text, (dtype,), max_tensor_bytes=limit)
        predicted = bundle_footprint(load_config(tiny_text), (dtype,), max_tensor_bytes=limit)
        for session, variants in predicted.items():
            written = written_bytes(tiny_written / limits, session, dtype)
            assert abs(variants[dtype].bytes - written) <= GRAPH_TOLERANCE_TINY * written, (session, dtype)


def test_nano_slice_bytes_are_exact_and_totals_within_one_percent(nano_slice: Path) -> None:
    onnx_dir = nano_slice.parent / "onnx"
    assert_plan_exact(onnx_dir, nano_slice, DTYPES)
    predicted = bundle_footprint(load_config(nano_slice), DTYPES)
    for session, variants in predicted.items():
        for dtype, found in variants.items():
            written = written_bytes(onnx_dir, session, dtype)
            error = found.bytes / written - 1
            print(f"{session} {dtype}: predicted {found.bytes:,}, written {written:,}: {error:+.3%}")
            assert abs(error) < 0.01, (session, dtype)


# --- Arithmetic -----------------------------------------------------------------------------------------------------
def test_e2b_lm_head_and_tables_are_split_to_fit_a_phone() -> None:
    """E2B's LM head [262,400, 2048] in 4 bits: WASM unpacks each MatMulNBits weight to fp32 (2.15 GB here), so it
    is cut into row parts whose fp32 copy fits 256 MiB: nine. Its per-layer table (1 GB of codes) becomes four
    column parts under the tensor limit, one part again when the limit is 1 GiB."""
    child = make_plan(e4b_config(), get_preset("E2B").spec()).child
    footprint = bundle_footprint(child, ("q4", "fp16"))
    for dtype in ("q4", "fp16"):
        assert max(v[dtype].largest_tensor[1] for v in footprint.values()) <= MAX_TENSOR_BYTES
    parts = matmul_parts("lm_head.weight", 262_400, 2048, "q4")
    rows = [p.stop - p.start for p in parts]
    assert len(parts) == 9 and set(rows) == {29_155, 29_156} and parts[-1].stop == 262_400
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
    assert max(rows) * 2048 * 4 <= MAX_UNPACKED_BYTES < -(-262_400 // 8) * 2048 * 4  # eight parts would not fit
    assert footprint["decoder_model_merged"]["q4"].largest_tensor == ("lm_head.weight_part8_Q4", 29_156 * 64 * 16)
    table = "text_model.embed_tokens_per_layer.weight/q4/codes_7"  # the 4th part: 60 of 240 blocks of 32 columns
    assert footprint["embed_tokens"]["q4"].largest_tensor == (table, 262_144 * 60 * 16)
    unsplit = bundle_footprint(child, ("q4",), max_tensor_bytes=1 << 30)["embed_tokens"]["q4"]
    assert unsplit.largest_tensor == ("text_model.embed_tokens_per_layer.weight/q4/codes_1", 262_144 * 240 * 16)


def test_parts_are_balanced() -> None:
    parts = gather_parts("t", 10, 64, 4, 10 * 4 * 7)  # at most 7 of the 64 columns a part: 10 parts of 6 or 7
    assert len(parts) == 10 and {p.stop - p.start for p in parts} == {6, 7}
    assert parts[0].start == 0 and parts[-1].stop == 64
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))


def test_data_files_do_not_depend_on_tensor_order() -> None:
    lengths = [1000, 64, 1, 4096, 130, 2000]
    for order in (lengths, lengths[::-1], sorted(lengths)):
        placed = place(order, max_file_bytes=4200)
        chunks: dict[int, int] = {}
        for length, (chunk, offset) in zip(order, placed, strict=True):
            assert offset % 64 == 0
            chunks[chunk] = max(chunks.get(chunk, 0), aligned(offset + length))
        assert all(end <= 4200 for end in chunks.values())
        assert sum(chunks.values()) == data_file_bytes(lengths) == sum(aligned(n) for n in lengths)


def test_kv_cache_counts_only_the_layers_that_own_one() -> None:
    child = make_plan(e4b_config(), get_preset("E2B").spec()).child
    owners = child.text.layer_types[: child.text.first_shared]
    assert child.text.num_hidden_layers == 30 and len(owners) == 20  # 10 KV-shared layers hold none
    per_token = 2 * 2 * 256 * 4  # keys and values, 2 KV heads of 256, fp32
    assert kv_cache_bytes(child, 2048) == 20 * 2048 * per_token  # the full history on every owning layer
    sliding = owners.count("sliding_attention")
    windowed = (sliding * 512 + (20 - sliding) * 2048) * per_token
    assert kv_cache_bytes(child, 2048, windowed=True) == windowed
    memory = runtime_memory(child, "q4", 2048)
    assert memory["total"] == memory["weights"] + memory["kv_cache"] + memory["activations"]
    weights = sum(v["q4"].data_bytes for v in bundle_footprint(child, ("q4",), modalities=("text",)).values())
    assert memory["weights"] == weights
    assert runtime_memory(child, "q4", 4096)["kv_cache"] == 2 * memory["kv_cache"]


# --- The command ---------------------------------------------------------------------------------------------------
def plan_json(*args: str) -> dict:
    code = ("import sys; from matslice.cli import main; code = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'transformers', 'onnx', 'onnxruntime') if m in sys.modules]; "
            "assert not heavy, heavy; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, "plan", *args, "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_plan_predicts_the_bundle_without_torch() -> None:
    found = plan_json("--preset", "E2B", "--dtype", "q4,q4f16", "--context", "2048")
    bundle, memory = found["bundle"], found["memory"]
    assert bundle["dtypes"] == ["q4", "q4f16"]
    assert set(bundle["sessions"]) == {"embed_tokens", "decoder_model_merged", "audio_encoder", "vision_encoder"}
    for dtype in ("q4", "q4f16"):
        assert bundle["bytes"][dtype]["text"] < bundle["bytes"][dtype]["all"]
        record = bundle["sessions"]["decoder_model_merged"][dtype]
        assert record["bytes"] == record["data_bytes"] + record["graph_bytes"]
        assert bundle["largest_tensor"][dtype]["bytes"] <= MAX_TENSOR_BYTES
        assert set(memory["dtypes"][dtype]) >= {"weights", "kv_cache", "activations", "total"}
    assert memory["context"] == 2048


def test_plan_reads_a_customised_vision_tower_from_the_headers(tiny_multimodal: Path) -> None:
    found = plan_json(str(tiny_multimodal), "--dtype", "fp32")
    vision = found["bundle"]["sessions"]["vision_encoder"]["fp32"]
    assert vision["largest_tensor"]["name"] == "model.vision_tower.timm_model.msfa.ffn.pw_proj.conv.weight"
    assert vision["data_bytes"] > 60_000_000  # the 1/8-width tower's 16M parameters
    config_only = plan_json(str(tiny_multimodal / "config.json"), "--dtype", "fp32")["bundle"]
    assert "vision_encoder" not in config_only["sessions"] and "headers" in config_only["notes"][0]


def test_plan_refuses_a_bad_context_in_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "matslice", "plan", "--context", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: --context 0")
    assert len(done.stderr.strip().splitlines()) == 1
