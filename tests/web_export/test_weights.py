"""Weights are read from the checkpoint a block of rows at a time, never through a loaded model.

The exporter traces a skeleton whose parameters hold no memory, and every variant is written from the
safetensors files. These tests pin what that must guarantee: the skeleton really is weightless and knows
where each weight lives, streamed files do not depend on how the rows were blocked, the 4-bit blocks are
the checkpoint's own rows quantized, and a checkpoint missing a tensor is refused by name.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from safetensors.numpy import load_file, save_file

from gemma3n.safetensors import read_tensors
from web_export import weights
from web_export.checkpoint import load_skeleton
from web_export.nbits import quantize_blocks
from web_export.quantize import write_variant


@pytest.fixture(scope="module")
def text_graphs(tiny_text_graphs: list) -> list:
    return tiny_text_graphs


def test_skeleton_holds_no_weights(tiny_text: Path) -> None:
    parts = load_skeleton(tiny_text)
    stored = load_file(tiny_text / "model.safetensors")
    names = {info.start: name for name, info in read_tensors(tiny_text).items()}  # a source knows its byte range
    params = list(parts.model.parameters())
    assert params and all(p.untyped_storage().nbytes() <= 4 for p in params)
    assert {id(p) for p in params} == set(parts.sources)
    for param in params:
        source = parts.sources[id(param)]
        assert tuple(param.shape) == source.shape == stored[names[source.info.start]].shape
    assert parts.lm_head.weight is parts.text_model.embed_tokens.weight  # tied: one source


def test_streamed_files_do_not_depend_on_row_blocks(text_graphs: list, tmp_path: Path, monkeypatch) -> None:
    for dtype in ("q4", "q8", "fp32", "q4f16"):
        for graph in text_graphs:
            whole = write_variant(graph, dtype, tmp_path / "whole" / f"{graph.name}.onnx")
            with monkeypatch.context() as patch:
                patch.setattr(weights, "BLOCK_BYTES", 1000)  # a few rows per block
                blocked = write_variant(graph, dtype, tmp_path / "blocked" / f"{graph.name}.onnx")
            for a, b in zip((whole.path, *whole.data_files), (blocked.path, *blocked.data_files), strict=True):
                assert a.read_bytes() == b.read_bytes()


def test_q4_blocks_are_the_checkpoint_rows_quantized(tiny_text: Path, text_graphs: list, tmp_path: Path) -> None:
    """The LM head (tied to the embedding table) as MatMulNBits: its codes and scales are exactly the
    checkpoint's table quantized row by row, and the embedding lookup is no float table any more."""
    decoder = next(g for g in text_graphs if g.name == "decoder_model_merged")
    saved = write_variant(decoder, "q4", tmp_path / "decoder_model_merged_q4.onnx")
    model = onnx.load(saved.path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    table = load_file(tiny_text / "model.safetensors")["model.embed_tokens.weight"].astype(np.float32)
    head = next(n for n in model.graph.node
                if n.op_type == "MatMulNBits" and next(a.i for a in n.attribute if a.name == "N") == table.shape[0])
    codes, scales = quantize_blocks(table, 32, symmetric=True)
    np.testing.assert_array_equal(inits[head.input[1]], codes)
    np.testing.assert_array_equal(inits[head.input[2]], scales)
    assert not any(n.op_type == "MatMul" and n.input[1] in inits and inits[n.input[1]].ndim == 2
                   for n in model.graph.node)  # every weight matmul went to 4 bits


def test_missing_tensor_is_refused_by_name(tiny_text: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_text, broken)
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, broken / "model.safetensors")
    done = subprocess.run([sys.executable, "-m", "matslice", "export", str(broken), str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert "'model.layers.1.mlp.down_proj.weight'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
