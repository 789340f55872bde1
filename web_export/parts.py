"""The graph side of weights in parts: find the MatMul or Gather that reads a weight and rewrite it so that each part
(`gemma3n/layout.py` decides them) is its own initializer, with the partial results concatenated on the last axis.

A MatMul by W [N, K] split by output rows computes each output column from that column's own row, so the
Concat of the partial products holds exactly the unsplit product's values; a Gather from a table split by
columns returns the same row pieces. Float MatMul weights are also given their transposed initializer here,
named `<weight>_T` (the traced graph reads them through a Transpose), so every name a bundle holds can be
predicted from the config.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import helper

from gemma3n.layout import Part, gather_parts, matmul_parts
from web_export.weights import Pending, Source, Transposed, Window

Lowering = Callable[[onnx.NodeProto, str, Source], list[onnx.NodeProto]]


def rewrite_weight_matmuls(model: onnx.ModelProto, weights: dict[str, Source], lower: Lowering) -> None:
    """Replace each MatMul of the main graph by a weight with `lower(node, weight name, weight as [N, K])`."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    lowered = []
    for node in graph.node:
        name, source = matmul_weight(node, producers, weights)
        lowered.extend([node] if source is None else lower(node, name, source))
    del graph.node[:]
    graph.node.extend(lowered)


def matmul_weight(node: onnx.NodeProto, producers: dict, weights: dict[str, Source]) -> tuple[str, Source | None]:
    """(name, source as [N, K]) of the weight a MatMul multiplies by, or (_, None) for any other node.

    B is either Transpose(W) of a weight W [N, K] (a traced Linear) or a weight [K, N] itself (an fp32 file)."""
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
        return "", None
    b = node.input[1]
    if b in weights and len(weights[b].shape) == 2:
        return b, Transposed(weights[b])
    transpose = producers.get(b)
    if transpose is None or transpose.op_type != "Transpose" or transpose.input[0] not in weights:
        return "", None
    perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), [1, 0])
    source = weights[transpose.input[0]]
    if len(source.shape) != 2 or perm != [1, 0]:
        return "", None
    return transpose.input[0], source


def part_outputs(node: onnx.NodeProto, count: int) -> list[str]:
    """Where each part's result goes: the node's own output when there is one part."""
    out = node.output[0]
    return [out] if count == 1 else [f"{out}/part{i}" for i in range(count)]


def concat(node: onnx.NodeProto, outputs: list[str]) -> list[onnx.NodeProto]:
    """The Concat of the parts' results into the node's output (nothing for one part)."""
    if len(outputs) == 1:
        return []
    return [helper.make_node("Concat", outputs, [node.output[0]], name=f"{node.name}/concat", axis=-1)]


def lower_float_matmuls(model: onnx.ModelProto, weights: dict[str, Source], pending: Pending, *, dtype: str,
                        limit: int | None) -> int:
    """fp32/fp16: MatMul(x, Transpose(W)) becomes MatMul(x, W_T) per part of W's rows; returns how many weights.

    A weight that already is B [K, N] (an fp32 file) and needs no split is left as it is."""
    done: dict[str, list[Part] | None] = {}

    def lower(node: onnx.NodeProto, name: str, source: Source) -> list[onnx.NodeProto]:
        if name not in done:
            n, k = source.shape
            parts = matmul_parts(name, n, k, dtype, limit=limit)
            direct = len(parts) == 1 and node.input[1] == name
            for part in [] if direct else parts:
                pending.plain(part.tensors[0].name, Transposed(Window.of_rows(source, part.start, part.stop)))
            done[name] = None if direct else parts
        parts = done[name]
        if parts is None:
            return [node]
        outputs = part_outputs(node, len(parts))
        nodes = [helper.make_node("MatMul", [node.input[0], part.tensors[0].name], [out],
                                  name=node.name if len(parts) == 1 else f"{node.name}/part{i}")
                 for i, (part, out) in enumerate(zip(parts, outputs, strict=True))]
        return nodes + concat(node, outputs)

    rewrite_weight_matmuls(model, weights, lower)
    return sum(parts is not None for parts in done.values())


def split_float_gathers(model: onnx.ModelProto, weights: dict[str, Source], pending: Pending, *, float_bytes: int,
                        limit: int | None) -> int:
    """A float table Gathered from (axis 0) and too big for one tensor becomes column parts, each Gathered, then
    concatenated; returns how many tables were split."""
    graph = model.graph
    done: dict[str, list[Part]] = {}
    rewritten: list[onnx.NodeProto] = []
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        source = weights.get(node.input[0]) if node.op_type == "Gather" and axis == 0 else None
        parts = [] if source is None or len(source.shape) != 2 else gather_parts(node.input[0], *source.shape,
                                                                                  float_bytes, limit)
        if len(parts) < 2:
            rewritten.append(node)
            continue
        if node.input[0] not in done:
            for part in parts:
                pending.plain(part.tensors[0].name, Window.of_cols(source, part.start, part.stop))
            done[node.input[0]] = parts
        outputs = part_outputs(node, len(parts))
        rewritten.extend(helper.make_node("Gather", [part.tensors[0].name, node.input[1]], [out], axis=0,
                                          name=f"{node.name}/part{i}")
                         for i, (part, out) in enumerate(zip(parts, outputs, strict=True)))
        rewritten.extend(concat(node, outputs))
    del graph.node[:]
    graph.node.extend(rewritten)
    return len(done)
