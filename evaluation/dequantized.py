"""PyTorch with a quantized bundle's own weights: the reference its 4-bit sessions must match exactly.

Random tiny weights round badly at 4 bits, so comparing a q4 session with the fp32 model says little
about the kernels (web_export/TRAPS.md). Instead we read every weight-only quantized tensor back out
of the q4 graphs (MatMulNBits blocks and our 4/8-bit lookups), dequantize it in numpy, put it into the
PyTorch model in place of the weight it was made from, and compare logits as for fp32.

A quantized tensor is matched to its PyTorch parameter by shape and by value (the parameter it rounds,
within half a quantization step), so no naming convention of the exporter is relied on. A weight split to fit the
tensor limit is put back together from the graph's structure: MatMulNBits parts feeding one Concat are rows of one
weight, in order; lookup parts are numbered columns of one table.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from web_export.lookup import dequantize_rows

_LOOKUP = re.compile(r"^(?P<table>.+)/q(?P<bits>[48])/(?P<kind>codes|scales)_(?P<n>\d+)$")


def _nbits(q: np.ndarray, scales: np.ndarray, zero: np.ndarray | None, n: int, k: int, block: int) -> np.ndarray:
    """MatMulNBits' B as float [N, K]: 4-bit codes, low nibble first, zero point 8 unless given."""
    codes = np.stack([q & 0x0F, q >> 4], axis=-1).reshape(n, -1)[:, : (k + block - 1) // block * block]
    codes = codes.astype(np.float32)
    if zero is None:
        offsets = np.full((n, codes.shape[1] // block), 8, dtype=np.float32)
    else:
        offsets = np.stack([zero & 0x0F, zero >> 4], axis=-1).reshape(n, -1)[:, : codes.shape[1] // block]
    values = (codes.reshape(n, -1, block) - offsets[..., None]) * scales.reshape(n, -1)[..., None]
    return values.reshape(n, -1)[:, :k].astype(np.float32)


def quantized_tensors(path: Path) -> list[tuple[type[nn.Module], np.ndarray]]:
    """Every weight-only quantized tensor of one ONNX file, dequantized, in PyTorch's layout, with the kind
    of module its weight belongs to (MatMulNBits: a Linear; a lookup: an Embedding)."""
    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    array = lambda name: numpy_helper.to_array(inits[name])  # noqa: E731
    tensors = []

    def nbits(node: onnx.NodeProto) -> np.ndarray:
        attrs = {a.name: a.i for a in node.attribute}
        zero = array(node.input[3]) if len(node.input) > 3 and node.input[3] in inits else None
        return _nbits(array(node.input[1]), array(node.input[2]), zero, attrs["N"], attrs["K"], attrs["block_size"])

    matmuls = {node.output[0]: node for node in model.graph.node if node.op_type == "MatMulNBits"}
    for node in model.graph.node:  # a weight split by output rows: its parts' results are concatenated
        if node.op_type == "Concat" and node.input and all(name in matmuls for name in node.input):
            parts = [matmuls.pop(name) for name in node.input]
            tensors.append((nn.Linear, np.concatenate([nbits(part) for part in parts], axis=0)))
    tensors += [(nn.Linear, nbits(node)) for node in matmuls.values()]
    parts: dict[tuple[str, int], dict[str, list]] = defaultdict(lambda: {"codes": [], "scales": []})
    for name in inits:
        if match := _LOOKUP.match(name):
            key = (match["table"], int(match["bits"]))
            parts[key][match["kind"]].append((int(match["n"]), name))
    for (_, bits), found in sorted(parts.items()):
        codes, scales = (sorted(found[kind]) for kind in ("codes", "scales"))
        columns = [array(c).shape[1] * (2 if bits == 4 else 1) for _, c in codes]
        block = columns[0] // array(scales[0][1]).shape[1]
        table = np.concatenate([dequantize_rows(array(c), array(s), bits, block)
                                for (_, c), (_, s) in zip(codes, scales, strict=True)], axis=1)
        tensors.append((nn.Embedding, table))
    return tensors


def load_dequantized(model: nn.Module, onnx_files: list[Path]) -> int:
    """Replace each PyTorch weight by its dequantized copy from `onnx_files`; returns how many were replaced.

    A tied LM head is untied first: the decoder quantizes it as a matrix, the embedding session as a table.
    """
    head = getattr(model, "lm_head", None)
    if head is not None:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    weights = {kind: [m.weight for m in model.modules() if isinstance(m, kind)] for kind in (nn.Linear, nn.Embedding)}
    used: set[int] = set()
    for path in onnx_files:
        for kind, tensor in quantized_tensors(path):
            value = torch.from_numpy(tensor)
            # a weight the graph uses twice (AltUp's router) is quantized twice, identically: distance 0
            candidates = [w for w in weights[kind] if tuple(w.shape) == tensor.shape]
            if not candidates:
                raise ValueError(f"{path.name}: no {kind.__name__} weight of shape {tensor.shape} to replace")
            best = min(candidates, key=lambda w: float((w.detach() - value).abs().max()))
            best.data.copy_(value)
            used.add(id(best))
    return len(used)
