"""Quantized embedding lookups built from standard ONNX ops, so they run on every backend.

onnxruntime's `GatherBlockQuantized` contrib op has no kernel in onnxruntime-web's WASM build, the
fallback every browser without WebGPU uses, and a q4 bundle that needs it does not load there. So a
lookup into a weight table becomes: gather the packed rows, unpack nibbles (BitwiseAnd, BitShift),
subtract the offset, and multiply by the gathered per-block scales. Only the rows a lookup reads are
dequantized, so the table is never materialised in fp32 at run time.

Tables are also split along their columns so that no single tensor exceeds the tensor limit (a phone's WebGPU
binds at most 256 MiB per buffer; the E2B per-layer table is 1 GB of codes even at 4 bits).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gemma3n.layout import Part, lookup_applies, lookup_block, lookup_parts
from web_export.weights import Pending, Source, Window, spec_stub

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


def lower_lookups(model: onnx.ModelProto, weights: dict[str, Source], pending: Pending, *, bits: int = 4,
                  block_size: int = 32, float_bytes: int = 4, limit: int | None = None) -> int:
    """Rewrite every Gather over a 2-D weight table of the main graph into a quantized lookup.

    `weights` maps the graph's weights (data-less initializers) to their sources; the codes and scales are
    registered with `pending` and computed from blocks of table rows while they are written. Which tables qualify,
    the block (`block_size` at 4 bits, 32 at 8) and the column parts that keep each tensor under `limit` bytes are
    gemma3n/layout.py's. A table still read by other nodes keeps its float copy for them. Returns how many tables
    were rewritten.
    """
    if max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 18:
        raise ValueError("quantized lookups need opset 18 (BitwiseAnd); export with opset >= 18")
    block = lookup_block(bits, block_size)
    graph = model.graph
    rewritten: list[onnx.NodeProto] = []
    done: dict[str, tuple[_Builder, list[Part]]] = {}
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        source = weights.get(node.input[0]) if node.op_type == "Gather" and axis == 0 else None
        if source is None or len(source.shape) != 2 or not lookup_applies(*source.shape, block):
            rewritten.append(node)
            continue
        if node.input[0] not in done:
            parts = lookup_parts(node.input[0], *source.shape, bits, block, float_bytes, limit)
            for part in parts:
                pending.add(Window.of_cols(source, part.start, part.stop), [spec_stub(t) for t in part.tensors],
                            lambda table: quantize_rows(table, bits, block))
            done[node.input[0]] = _Builder(graph, f"{node.input[0]}/q{bits}"), parts
        b, parts = done[node.input[0]]
        b.nodes = []
        batch_shape = b.op("Shape", [node.input[1]])
        outputs = []
        for part in parts:
            codes, scales = (t.name for t in part.tensors)
            target = node.output[0] if len(parts) == 1 else None
            outputs.append(_lookup(b, codes, scales, (part.stop - part.start) // block, node.input[1], bits, block,
                                   batch_shape, target))
        if len(outputs) > 1:
            b.op("Concat", outputs, node.output[0], axis=-1)
        rewritten.extend(b.nodes)
    del graph.node[:]
    graph.node.extend(rewritten)
    return len(done)
