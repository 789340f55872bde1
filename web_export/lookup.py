"""Quantized embedding lookups built from standard ONNX ops, so they run on every backend.

onnxruntime's `GatherBlockQuantized` contrib op has no kernel in onnxruntime-web's WASM build, the
fallback every browser without WebGPU uses, and a q4 bundle that needs it does not load there. So a
lookup into a weight table becomes: gather the packed rows, unpack nibbles (BitwiseAnd, BitShift),
subtract the offset, and multiply by the gathered per-block scales. Only the rows a lookup reads are
dequantized, so the table is never materialised in fp32 at run time.

Tables are also split along their columns so that no single tensor exceeds `max_tensor_bytes` (WebGPU
buffers are limited to 1 GiB on many adapters; the E2B per-layer table is 2 GB even at 8 bits).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from web_export.weights import Pending, Source, stub

OFFSET = {4: 8, 8: 128}


def quantize_rows(table: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-block quantization along each row: (uint8 codes, packed if 4-bit; float scales)."""
    rows, cols = table.shape
    blocks = table.reshape(rows, cols // block, block).astype(np.float32)
    top = OFFSET[bits] - 1
    scales = np.abs(blocks).max(axis=-1) / top
    scales[scales == 0] = 1.0
    codes = np.clip(np.rint(blocks / scales[..., None]), -top - 1, top) + OFFSET[bits]
    codes = codes.astype(np.uint8).reshape(rows, cols)
    if bits == 4:
        codes = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return codes, scales.astype(np.float32)


def dequantize_rows(codes: np.ndarray, scales: np.ndarray, bits: int, block: int) -> np.ndarray:
    """The float table a quantized lookup reads (for tests and for checks against PyTorch)."""
    if bits == 4:
        codes = np.stack([codes & 0x0F, codes >> 4], axis=-1).reshape(codes.shape[0], -1)
    values = codes.astype(np.float32) - OFFSET[bits]
    rows, cols = values.shape
    return (values.reshape(rows, cols // block, block) * scales[..., None]).reshape(rows, cols)


def _column_parts(cols: int, block: int, bits: int, rows: int, max_bytes: int | None) -> list[tuple[int, int]]:
    """Column ranges, on block boundaries, whose quantized bytes each stay under `max_bytes`."""
    if max_bytes is None:
        return [(0, cols)]
    bytes_per_col = rows * bits / 8
    width = int(max_bytes // bytes_per_col) // block * block
    if width == 0:
        raise ValueError(f"one {block}-column block of a {rows}-row table exceeds {max_bytes} bytes: "
                         f"use a smaller block size")
    return [(start, min(cols, start + width)) for start in range(0, cols, width)]


class _Builder:
    """Appends the nodes and initializers of one rewritten lookup, with unique names."""

    def __init__(self, graph: onnx.GraphProto, prefix: str):
        self.graph, self.prefix, self.nodes, self.count = graph, prefix, [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}_{self.count}"

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=self.name(op_type), **attrs))
        return output


def _lookup(b: _Builder, codes: str, scales: str, blocks: int, ids: str, bits: int, block: int,
            batch_shape: str, output: str | None) -> str:
    gathered = b.op("Gather", [codes, ids])
    if bits == 4:
        low = b.op("BitwiseAnd", [gathered, b.const("mask", np.array(0x0F, np.uint8))])
        high = b.op("BitShift", [gathered, b.const("four", np.array(4, np.uint8))], direction="RIGHT")
        last = b.const("last", np.array([-1], np.int64))
        gathered = b.op("Concat", [b.op("Unsqueeze", [low, last]), b.op("Unsqueeze", [high, last])], axis=-1)
    values = b.op("Sub", [b.op("Cast", [gathered], to=TensorProto.FLOAT),
                          b.const("offset", np.array(OFFSET[bits], np.float32))])
    split = b.op("Concat", [batch_shape, b.const("blocks", np.array([blocks, block], np.int64))], axis=0)
    scaled = b.op("Mul", [b.op("Reshape", [values, split]),
                          b.op("Unsqueeze", [b.op("Gather", [scales, ids]),
                                             b.const("last", np.array([-1], np.int64))])])
    flat = b.op("Concat", [batch_shape, b.const("cols", np.array([blocks * block], np.int64))], axis=0)
    return b.op("Reshape", [scaled, flat], output)


def _quantized_part(b: _Builder, pending: Pending, source: Source, start: int, stop: int, bits: int,
                    block: int) -> tuple[str, str, int]:
    """Register the codes and scales of columns [start, stop) of a table, computed row block by row block;
    returns their names and the number of blocks per row."""
    rows, blocks = source.shape[0], (stop - start) // block
    codes = stub(b.name("codes"), TensorProto.UINT8, [rows, (stop - start) * bits // 8])
    scales = stub(b.name("scales"), TensorProto.FLOAT, [rows, blocks])
    pending.add(source, [codes, scales], lambda table: quantize_rows(table[:, start:stop], bits, block))
    return codes.name, scales.name, blocks


def lower_lookups(model: onnx.ModelProto, weights: dict[str, Source], pending: Pending, *, bits: int = 4,
                  block_size: int = 32, min_rows: int = 64, max_tensor_bytes: int | None = 1 << 30) -> int:
    """Rewrite every Gather over a 2-D weight table of the main graph into a quantized lookup.

    `weights` maps the graph's weights (data-less initializers) to their sources; the codes and scales are
    registered with `pending` and computed from blocks of table rows while they are written. A table still
    read by other nodes keeps its float copy for them. Returns how many tables were rewritten.
    """
    if max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 18:
        raise ValueError("quantized lookups need opset 18 (BitwiseAnd); export with opset >= 18")
    graph = model.graph
    rewritten: list[onnx.NodeProto] = []
    done: dict[str, tuple[_Builder, list[tuple[str, str, int]]]] = {}
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        source = weights.get(node.input[0]) if node.op_type == "Gather" and axis == 0 else None
        if source is None or len(source.shape) != 2 or source.shape[0] < min_rows or source.shape[1] % block_size:
            rewritten.append(node)
            continue
        if node.input[0] not in done:
            rows, cols = source.shape
            b = _Builder(graph, f"{node.input[0]}/q{bits}")
            done[node.input[0]] = b, [
                _quantized_part(b, pending, source, start, stop, bits, block_size)
                for start, stop in _column_parts(cols, block_size, bits, rows, max_tensor_bytes)
            ]
        b, parts = done[node.input[0]]
        b.nodes = []
        batch_shape = b.op("Shape", [node.input[1]])
        outputs = []
        for codes, scales, blocks in parts:
            target = node.output[0] if len(parts) == 1 else None
            outputs.append(_lookup(b, codes, scales, blocks, node.input[1], bits, block_size, batch_shape, target))
        if len(outputs) > 1:
            b.op("Concat", outputs, node.output[0], axis=-1)
        rewritten.extend(b.nodes)
    del graph.node[:]
    graph.node.extend(rewritten)
    return len(done)
