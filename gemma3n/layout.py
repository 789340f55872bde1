"""How a bundle stores one weight, as arithmetic: the tensors it becomes in each dtype, how a weight too big for one
tensor is split, and where the bytes go (inside the .onnx file or at an aligned offset of a data chunk).

The exporter names, shapes and places its initializers with these functions, and `matslice plan` adds up the very
same ones without tracing anything, so the predicted bundle cannot drift from the written one. No torch, onnx or
numpy here: a plan is pure data.

Why weights are split: a phone's WebGPU adapter may bind at most `maxStorageBufferBindingSize` bytes (128-256 MiB
on many) per tensor, and Chrome refuses ArrayBuffers near 2 GiB, so no single tensor may exceed `MAX_TENSOR_BYTES`
(or the data chunk size). A MatMul weight [N, K] is split by its output rows N (each output column is computed from
its own row, so the Concat of the partial products is the unsplit product); an embedding table by its columns (a
lookup returns whole rows, so the Concat of partial rows is the unsplit row). Parts are balanced: equal widths, on
multiples of the quantization block for quantized tables.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from gemma3n.dtypes import DTYPES
from gemma3n.errors import UserError

MAX_TENSOR_BYTES = 256 << 20  # a phone's WebGPU storage-binding limit (256 MiB; many desktops allow 1-2 GiB)
DEFAULT_MAX_FILE_BYTES = 1_500_000_000  # Chrome refuses ArrayBuffers of ~2 GiB: stay well below
MAX_CHUNKS = 100  # transformers.js MAX_EXTERNAL_DATA_CHUNKS (utils/hub/constants.js)
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inside the .onnx file, as onnx.save does by default
ALIGNMENT = 64  # every external tensor starts, and every chunk ends, on a multiple of this
# onnxruntime-web's WASM build has no 4-bit GEMM: each MatMulNBits call unpacks its whole weight to an fp32 [K, N]
# buffer. Capping that buffer per part keeps a full-size model's WASM heap far below wasm32's 4 GB (E0.40B-text: the
# tied LM head alone would take 2.1 GB; with parts the tab's heap fell from 3.5 to 1.7 GB, the tokens unchanged).
MAX_UNPACKED_BYTES = 256 << 20
LOOKUP_MIN_ROWS = 64  # smaller tables stay float Gathers: a lookup's extra nodes would outweigh its savings
Q8_LOOKUP_BLOCK = 32
# The decoder's rotary embeddings come from cos/sin tables of coarse (p // ROTARY_SPLIT) and fine (p % ROTARY_SPLIT)
# angles rather than from Cos/Sin nodes, whose WebGPU precision (WGSL allows 2^-11) changes a deep model's tokens.
ROTARY_SPLIT = 256

Element = Literal["float", "uint8"]
Use = Literal["matmul", "gather", "other", "constant"]  # constant: traced with its values, kept in the .onnx file


@dataclass(frozen=True)
class TensorSpec:
    """One initializer as stored: a "float" is written at the dtype's float width (`float_bytes`)."""

    name: str
    element: Element
    shape: tuple[int, ...]
    float_bytes: int = 4

    @property
    def itemsize(self) -> int:
        return self.float_bytes if self.element == "float" else 1

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


@dataclass(frozen=True)
class Part:
    """Units [start, stop) of a weight (MatMul: output rows; table: columns) and the tensors computed together from
    them. A part's tensors stay inside the .onnx file only when every one of them is small (`inline`)."""

    start: int
    stop: int
    tensors: tuple[TensorSpec, ...]
    constant: bool = False  # a value the tracer computed (not a checkpoint weight): it stays in the .onnx file

    @property
    def inline(self) -> bool:
        return self.constant or stays_inline(t.nbytes for t in self.tensors)


def stays_inline(sizes: Iterable[int]) -> bool:
    """Whether tensors computed together stay inside the .onnx file: only when every one of them is small."""
    return all(size < EXTERNAL_MIN_BYTES for size in sizes)


def tensor_limit(max_tensor_bytes: int | None, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> int:
    """The most bytes one tensor may hold: the tensor limit, and never more than fits one (aligned) data chunk,
    since a tensor cannot span two chunks. `max_tensor_bytes=None` leaves only the chunk bound."""
    chunk = max_file_bytes // ALIGNMENT * ALIGNMENT
    return chunk if max_tensor_bytes is None else min(max_tensor_bytes, chunk)


def part_name(name: str, index: int, count: int) -> str:
    """A weight's own name when it is not split, else `<name>_part<index>`."""
    return name if count == 1 else f"{name}_part{index}"


def split(total: int, granularity: int, limit: int | None, make: Callable[[int, int, int], tuple[TensorSpec, ...]],
          what: str, unit: str, max_units: int | None = None) -> list[Part]:
    """Balanced parts of `total` units (cut on multiples of `granularity`) whose tensors each hold at most `limit`
    bytes (None: no limit) and that are at most `max_units` wide (None: any width). Part widths differ by at most
    one granule.

    `make(index, count, width)` gives the tensors of part `index` of `count` when it is `width` units wide; every
    tensor it makes must grow linearly with the width (or stay fixed), which all of ours do.
    """
    whole = make(0, 1, total)
    fits = limit is None or max(t.nbytes for t in whole) <= limit
    if fits and (max_units is None or total <= max_units):
        return [Part(0, total, whole)]
    granules = -(-total // granularity)
    count = 1 if max_units is None else -(-total // max(granularity, max_units // granularity * granularity))
    if not fits:
        per_granule = max(t.nbytes for t in make(0, 2, granularity))
        if per_granule > limit:
            piece = f"one {unit.removesuffix('s')}" if granularity == 1 else f"one block of {granularity} {unit}"
            raise UserError(f"{what}: {piece} already takes {per_granule:,} bytes, over the {limit:,}-byte tensor "
                            f"limit: raise --max-tensor-bytes")
        count = max(count, -(-granules // (limit // per_granule)))
    bounds = [min(total, granules * i // count * granularity) for i in range(count + 1)]
    return [Part(a, b, make(i, count, b - a)) for i, (a, b) in enumerate(itertools.pairwise(bounds))]


# --- What one weight becomes ---------------------------------------------------------------------------------------
def nbits_tensors(name: str, n: int, k: int, block: int, symmetric: bool, float_bytes: int) -> tuple[TensorSpec, ...]:
    """MatMulNBits' B for a weight [n, k]: 4-bit codes [n, blocks, block/2], one scale per block (float, halved by
    the fp16 conversion for q4f16) and, asymmetric, 4-bit zero points packed two a byte per row."""
    blocks = -(-k // block)
    tensors = (TensorSpec(f"{name}_Q4", "uint8", (n, blocks, block // 2)),
               TensorSpec(f"{name}_scales", "float", (n * blocks,), float_bytes))
    if not symmetric:
        tensors += (TensorSpec(f"{name}_zero_points", "uint8", (n, -(-blocks // 2))),)
    return tensors


def int8_scalars(name: str) -> tuple[TensorSpec, TensorSpec]:
    """The per-tensor scale and zero point of a q8 MatMulInteger weight: one pair for all its parts."""
    return TensorSpec(f"{name}_scale", "float", ()), TensorSpec(f"{name}_zero_point", "uint8", ())


def matmul_parts(name: str, n: int, k: int, dtype: str, *, block: int = 32, symmetric: bool = True,
                 limit: int | None = MAX_TENSOR_BYTES) -> list[Part]:
    """The tensors a MatMul weight [n, k] (a Linear's, out x in) becomes in `dtype`, split by output rows n.

    int4: MatMulNBits blocks; int8: MatMulInteger codes B = W.T [k, n] (uint8); float: B = W.T [k, n] itself.
    """
    kind = DTYPES[dtype]

    def make(index: int, count: int, width: int) -> tuple[TensorSpec, ...]:
        part = part_name(name, index, count)
        if kind.matmul == "int4":
            return nbits_tensors(part, width, k, block, symmetric, kind.float_bytes)
        if kind.matmul == "int8":
            return (TensorSpec(f"{part}_quantized", "uint8", (k, width)),)
        return (TensorSpec(f"{part}_T", "float", (k, width), kind.float_bytes),)

    unpacked = MAX_UNPACKED_BYTES // (4 * k) if kind.matmul == "int4" else None  # rows whose fp32 copy fits
    return split(n, 1, limit, make, name, "rows", max_units=unpacked)


def lookup_block(bits: int, block_size: int) -> int:
    """4-bit lookups use the dtype's block size; 8-bit ones always 32 columns a scale."""
    return block_size if bits == 4 else Q8_LOOKUP_BLOCK


def lookup_applies(rows: int, cols: int, block: int) -> bool:
    """Whether a Gathered table becomes a quantized lookup (else it stays a float Gather)."""
    return rows >= LOOKUP_MIN_ROWS and cols % block == 0


def lookup_tensors(table: str, index: int, rows: int, width: int, bits: int, block: int,
                   float_bytes: int) -> tuple[TensorSpec, TensorSpec]:
    """Codes (packed two a byte at 4 bits) and per-block scales of columns of a table, part `index` of a lookup."""
    return (TensorSpec(f"{table}/q{bits}/codes_{2 * index + 1}", "uint8", (rows, width * bits // 8)),
            TensorSpec(f"{table}/q{bits}/scales_{2 * index + 2}", "float", (rows, width // block), float_bytes))


def lookup_parts(table: str, rows: int, cols: int, bits: int, block: int, float_bytes: int,
                 limit: int | None = MAX_TENSOR_BYTES) -> list[Part]:
    """A quantized lookup's codes and scales, split by columns on block boundaries."""
    return split(cols, block, limit,
                 lambda i, _, width: lookup_tensors(table, i, rows, width, bits, block, float_bytes), table,
                 "columns")


def gather_parts(table: str, rows: int, cols: int, float_bytes: int,
                 limit: int | None = MAX_TENSOR_BYTES) -> list[Part]:
    """A float table that is Gathered, split by columns."""
    return split(cols, 1, limit, lambda i, count, width: (
        TensorSpec(part_name(table, i, count), "float", (rows, width), float_bytes),), table, "columns")


def weight_parts(name: str, shape: tuple[int, ...], use: Use, dtype: str, *, block_size: int = 32,
                 symmetric: bool = True, limit: int | None = MAX_TENSOR_BYTES) -> list[Part]:
    """Everything one weight becomes in `dtype`, by how the session reads it, as the exporter's passes decide it:
    MatMul weights are lowered by dtype, Gathered tables become quantized lookups where the dtype has them and the
    table qualifies, and every other weight (norms, convolutions, small tables) stays a float tensor."""
    kind = DTYPES[dtype]
    if use == "matmul":
        return matmul_parts(name, *shape, dtype, block=block_size, symmetric=symmetric, limit=limit)
    if use == "gather":
        rows, cols = shape
        bits = kind.lookup_bits
        if bits and lookup_applies(rows, cols, lookup_block(bits, block_size)):
            return lookup_parts(name, rows, cols, bits, lookup_block(bits, block_size), kind.float_bytes, limit)
        return gather_parts(name, rows, cols, kind.float_bytes, limit)
    spec = TensorSpec(name, "float", tuple(shape), kind.float_bytes)
    return [Part(0, shape[0] if shape else 1, (spec,), constant=use == "constant")]


# --- Where the bytes go -------------------------------------------------------------------------------------------
def aligned(length: int) -> int:
    return -(-length // ALIGNMENT) * ALIGNMENT


def place(lengths: Sequence[int], max_file_bytes: int) -> list[tuple[int, int]]:
    """(chunk index, offset) of each external tensor, in order: aligned offsets, a new chunk when the next (aligned)
    tensor would pass `max_file_bytes`. Every chunk ends padded to the alignment, so the chunks' total bytes are
    `data_file_bytes(lengths)` whatever the order: a plan predicts them without knowing the graph's order."""
    placed, index, used = [], 0, 0
    for length in lengths:
        if used and used + aligned(length) > max_file_bytes:
            index, used = index + 1, 0
        placed.append((index, used))
        used += aligned(length)
    return placed


def data_file_bytes(lengths: Iterable[int]) -> int:
    """Total bytes of a session's data chunks holding tensors of these lengths."""
    return sum(aligned(length) for length in lengths)
