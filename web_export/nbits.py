"""4-bit MatMulNBits weights, quantized from the checkpoint's rows as they are read.

A Linear weight is stored [N, K] (out, in) and MatMulNBits wants exactly that: per output row, blocks of
`block` values along K, two 4-bit codes a byte (low nibble first), one scale per block and, when
asymmetric, one 4-bit zero point per block packed the same way per row (onnxruntime contrib op
MatMulNBits; absent zero points mean 8). So each block of weight rows becomes the next bytes of the codes,
scales and zero points, and the weight is never held whole. The traced graph computes `x @ W.T` as
MatMul(x, Transpose(W)); the pair becomes one MatMulNBits node.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from web_export.weights import Pending, Source, Transposed, stub

MS_DOMAIN = "com.microsoft"


def quantize_blocks(rows: np.ndarray, block: int, symmetric: bool) -> tuple[np.ndarray, ...]:
    """(codes [n, K/block, block/2] uint8, scales [n*K/block] float32[, zero points [n, ceil(blocks/2)] uint8])."""
    n, k = rows.shape
    padded = math.ceil(k / block) * block
    if padded != k:
        rows = np.pad(rows, ((0, 0), (0, padded - k)))
    blocks = rows.reshape(n, padded // block, block).astype(np.float32)
    if symmetric:
        scales = np.abs(blocks).max(axis=-1) / 7
        scales[scales == 0] = 1.0
        codes = np.clip(np.rint(blocks / scales[..., None]), -8, 7) + 8
        zero = None
    else:
        low, high = np.minimum(blocks.min(axis=-1), 0), np.maximum(blocks.max(axis=-1), 0)
        scales = (high - low) / 15
        scales[scales == 0] = 1.0
        zero = np.clip(np.rint(-low / scales), 0, 15)
        codes = np.clip(np.rint(blocks / scales[..., None]) + zero[..., None], 0, 15)
    codes = codes.astype(np.uint8)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    out = (packed, scales.astype(np.float32).reshape(-1))
    if zero is not None:
        zero = zero.astype(np.uint8)
        if zero.shape[1] % 2:
            zero = np.pad(zero, ((0, 0), (0, 1)))
        out += (zero[:, 0::2] | (zero[:, 1::2] << 4),)
    return out


def lower_matmuls(
    model: onnx.ModelProto, weights: dict[str, Source], pending: Pending, *, block: int = 32, symmetric: bool = True
) -> int:
    """Turn every MatMul by a 2-D checkpoint weight into MatMulNBits; returns how many weights were quantized.

    `weights` maps the graph's weights (data-less initializers) to their sources; the quantized tensors are
    registered with `pending`, to be computed while they are written.
    """
    if block < 16 or block & (block - 1):
        raise ValueError(f"block size must be a power of two >= 16, got {block}")
    done: dict[str, tuple[str, ...]] = {}

    def lower(node: onnx.NodeProto, name: str, source: Source) -> list[onnx.NodeProto]:
        if name not in done:
            done[name] = _quantized_inputs(name, source, pending, block, symmetric)
        n, k = source.shape
        return [helper.make_node("MatMulNBits", [node.input[0], *done[name]], list(node.output), name=node.name,
                                 domain=MS_DOMAIN, K=k, N=n, bits=4, block_size=block)]

    rewrite_weight_matmuls(model, weights, lower)
    if done and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(done)


def rewrite_weight_matmuls(
    model: onnx.ModelProto,
    weights: dict[str, Source],
    lower: Callable[[onnx.NodeProto, str, Source], list[onnx.NodeProto]],
) -> None:
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


def _quantized_inputs(name: str, source: Source, pending: Pending, block: int, symmetric: bool) -> tuple[str, ...]:
    n, k = source.shape
    blocks = math.ceil(k / block)
    stubs = [
        stub(f"{name}_Q4", TensorProto.UINT8, [n, blocks, block // 2]),
        stub(f"{name}_scales", TensorProto.FLOAT, [n * blocks]),
    ]
    if not symmetric:
        stubs.append(stub(f"{name}_zero_points", TensorProto.UINT8, [n, math.ceil(blocks / 2)]))
    pending.add(source, stubs, lambda rows: quantize_blocks(rows, block, symmetric))
    return tuple(s.name for s in stubs)
