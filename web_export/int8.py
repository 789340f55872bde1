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

from web_export.nbits import rewrite_weight_matmuls
from web_export.weights import Pending, Source, Transposed, row_blocks, stub


def weight_range(source: Source) -> tuple[float, float]:
    """(scale, zero point) of QUInt8 asymmetric quantization over [min(w, 0), max(w, 0)]."""
    low, high = 0.0, 0.0
    for rows in row_blocks(source):
        low, high = min(low, float(rows.min())), max(high, float(rows.max()))
    scale = (high - low) / 255 or 1.0
    return scale, float(np.clip(np.rint(-low / scale), 0, 255))


def lower_matmuls_q8(model: onnx.ModelProto, weights: dict[str, Source], pending: Pending) -> int:
    """Turn every MatMul by a 2-D weight into the dynamic-quantization pattern; returns how many weights."""
    done: dict[str, tuple[str, str, str]] = {}

    def lower(node: onnx.NodeProto, name: str, source: Source) -> list[onnx.NodeProto]:
        if name not in done:
            done[name] = _quantized_weight(model.graph, pending, name, source)
        codes, scale, zero = done[name]
        a, out = node.input[0], node.output[0]
        return [
            helper.make_node("DynamicQuantizeLinear", [a], [f"{out}/a_q", f"{out}/a_scale", f"{out}/a_zero"]),
            helper.make_node("Mul", [f"{out}/a_scale", scale], [f"{out}/scale"]),
            helper.make_node("MatMulInteger", [f"{out}/a_q", codes, f"{out}/a_zero", zero], [f"{out}/int"]),
            helper.make_node("Cast", [f"{out}/int"], [f"{out}/float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{out}/float", f"{out}/scale"], [out], name=node.name),
        ]

    rewrite_weight_matmuls(model, weights, lower)
    return len(done)


def _quantized_weight(graph: onnx.GraphProto, pending: Pending, name: str, source: Source) -> tuple[str, str, str]:
    """Register B = W.T as uint8 codes (computed while written) and add its scale and zero point."""
    scale, zero = weight_range(source)
    b = Transposed(source)  # [K, N]
    codes = stub(f"{name}_quantized", TensorProto.UINT8, b.shape)
    pending.add(b, [codes], lambda rows: (np.clip(np.rint(rows / scale) + zero, 0, 255).astype(np.uint8),))
    graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
                              numpy_helper.from_array(np.array(zero, np.uint8), f"{name}_zero_point")])
    return codes.name, f"{name}_scale", f"{name}_zero_point"
