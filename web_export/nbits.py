"""4-bit MatMulNBits weights, quantized from the checkpoint's rows as they are read.

A Linear weight is stored [N, K] (out, in) and MatMulNBits wants exactly that: per output row, blocks of
`block` values along K, two 4-bit codes a byte (low nibble first), one scale per block and, when
asymmetric, one 4-bit zero point per block packed the same way per row (onnxruntime contrib op
MatMulNBits; absent zero points mean 8). So each block of weight rows becomes the next bytes of the codes,
scales and zero points, and the weight is never held whole. The traced graph computes `x @ W.T` as
MatMul(x, Transpose(W)); the pair becomes one MatMulNBits node, or one per part of the output rows when the
weight must be split to fit the tensor limit (names and shapes: gemma3n/layout.py).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from gemma3n.layout import Part, matmul_parts
from web_export.parts import concat, part_outputs, rewrite_weight_matmuls
from web_export.weights import Pending, Source, Window, spec_stub

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
    model: onnx.ModelProto,
    weights: dict[str, Source],
    pending: Pending,
    *,
    block: int = 32,
    symmetric: bool = True,
    dtype: str = "q4",
    limit: int | None = None,
) -> int:
    """Turn every MatMul by a 2-D checkpoint weight into MatMulNBits; returns how many weights were quantized.

    `weights` maps the graph's weights (data-less initializers) to their sources; the quantized tensors are
    registered with `pending`, to be computed while they are written. A weight whose blocks would exceed `limit`
    bytes is split by output rows into several MatMulNBits whose results are concatenated (web_export/parts.py).
    """
    if block < 16 or block & (block - 1):
        raise ValueError(f"block size must be a power of two >= 16, got {block}")
    done: dict[str, list[Part]] = {}

    def lower(node: onnx.NodeProto, name: str, source: Source) -> list[onnx.NodeProto]:
        n, k = source.shape
        if name not in done:
            done[name] = matmul_parts(name, n, k, dtype, block=block, symmetric=symmetric, limit=limit)
            for part in done[name]:
                pending.add(Window.of_rows(source, part.start, part.stop), [spec_stub(t) for t in part.tensors],
                            lambda rows: quantize_blocks(rows, block, symmetric))
        parts = done[name]
        outputs = part_outputs(node, len(parts))
        nodes = [helper.make_node("MatMulNBits", [node.input[0], *(t.name for t in part.tensors)], [out],
                                  name=node.name if len(parts) == 1 else f"{node.name}/part{i}", domain=MS_DOMAIN,
                                  K=k, N=part.stop - part.start, bits=4, block_size=block)
                 for i, (part, out) in enumerate(zip(parts, outputs, strict=True))]
        return nodes + concat(node, outputs)

    rewrite_weight_matmuls(model, weights, lower)
    if done and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(done)
