"""8-bit weights for dynamically quantized MatMuls (the q8 variant), written from the checkpoint's rows.

The graph is the one onnxruntime's `quantize_dynamic` builds (QUInt8 weights, one scale and zero point per
tensor): the activation is quantized at run time (DynamicQuantizeLinear), MatMulInteger multiplies, and the
int32 product is rescaled by both scales. MatMulInteger reads B as [K, N], the transpose of a Linear weight,
so B's rows are read as column blocks of the checkpoint tensor. A per-tensor range needs the whole weight's
minimum and maximum, so each weight is scanned once, a block at a time, before its codes are written.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gemma3n.layout import Part, int8_scalars, matmul_parts
from web_export.parts import concat, part_outputs, rewrite_weight_matmuls
from web_export.weights import Pending, Source, Transposed, Window, row_blocks, spec_stub


def weight_range(source: Source) -> tuple[float, float]:
    """(scale, zero point) of QUInt8 asymmetric quantization over [min(w, 0), max(w, 0)]."""
    low, high = 0.0, 0.0
    for rows in row_blocks(source):
        low, high = min(low, float(rows.min())), max(high, float(rows.max()))
    scale = (high - low) / 255 or 1.0
    return scale, float(np.clip(np.rint(-low / scale), 0, 255))


def lower_matmuls_q8(model: onnx.ModelProto, weights: dict[str, Source], pending: Pending, *,
                     limit: int | None = None) -> int:
    """Turn every MatMul by a 2-D weight into the dynamic-quantization pattern; returns how many weights.

    A weight whose codes would exceed `limit` bytes is split by output rows: the activation is quantized once, each
    part is multiplied and rescaled with the whole weight's scale and zero point, and the parts are concatenated.
    """
    done: dict[str, tuple[list[Part], str, str]] = {}

    def lower(node: onnx.NodeProto, name: str, source: Source) -> list[onnx.NodeProto]:
        if name not in done:
            done[name] = _quantized_weight(model.graph, pending, name, source, limit)
        parts, scale, zero = done[name]
        a, out = node.input[0], node.output[0]
        nodes = [
            helper.make_node("DynamicQuantizeLinear", [a], [f"{out}/a_q", f"{out}/a_scale", f"{out}/a_zero"]),
            helper.make_node("Mul", [f"{out}/a_scale", scale], [f"{out}/scale"]),
        ]
        outputs = part_outputs(node, len(parts))
        for i, (part, result) in enumerate(zip(parts, outputs, strict=True)):
            nodes += [
                helper.make_node("MatMulInteger", [f"{out}/a_q", part.tensors[0].name, f"{out}/a_zero", zero],
                                 [f"{result}/int"]),
                helper.make_node("Cast", [f"{result}/int"], [f"{result}/float"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{result}/float", f"{out}/scale"], [result],
                                 name=node.name if len(parts) == 1 else f"{node.name}/part{i}"),
            ]
        return nodes + concat(node, outputs)

    rewrite_weight_matmuls(model, weights, lower)
    return len(done)


def _quantized_weight(graph: onnx.GraphProto, pending: Pending, name: str, source: Source,
                      limit: int | None) -> tuple[list[Part], str, str]:
    """Register B = W.T as uint8 codes per part (computed while written) and add the weight's scale and zero point."""
    scale, zero = weight_range(source)
    n, k = source.shape
    parts = matmul_parts(name, n, k, "q8", limit=limit)
    for part in parts:
        b = Transposed(Window.of_rows(source, part.start, part.stop))  # [K, part's N]
        pending.add(b, [spec_stub(part.tensors[0])],
                    lambda rows: (np.clip(np.rint(rows / scale) + zero, 0, 255).astype(np.uint8),))
    scale_spec, zero_spec = int8_scalars(name)
    graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), scale_spec.name),
                              numpy_helper.from_array(np.array(zero, np.uint8), zero_spec.name)])
    return parts, scale_spec.name, zero_spec.name
