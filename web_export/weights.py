"""Where an exported session's weights come from: checkpoint tensors read a block of rows at a time.

The exporter traces the model with zero-memory placeholders (`web_export/checkpoint.load_skeleton`), so the
graph it produces names each weight but holds none. Every variant writer then reads the weights it needs
straight from the checkpoint's safetensors, a few tens of megabytes of rows at a time, and writes what it
derives from them (fp32 rows, 4-bit blocks, quantized lookup rows) before reading the next block. So no
variant ever holds a whole embedding table in fp32, and peak memory does not grow with the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx
from onnx import TensorProto

from gemma3n.layout import TensorSpec
from gemma3n.safetensors import TensorInfo, read_float

BLOCK_BYTES = 64 << 20  # fp32 bytes of one block of rows


class Source(Protocol):
    """A float tensor whose rows (for a 2-D one, any window of rows and columns) can be read as float32 blocks."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def read(self, rows: tuple[int, int], cols: tuple[int, int] | None = None) -> np.ndarray:
        """`tensor[r0:r1]`, or `tensor[r0:r1, c0:c1]` when `cols` is given (2-D only)."""
        ...


@dataclass(frozen=True)
class CheckpointTensor:
    """One tensor of a safetensors shard, optionally narrowed to its first `keep_rows` rows / `keep_cols` columns
    (the audio FFN units a slice zeroed are physically dropped this way)."""

    info: TensorInfo
    keep_rows: int | None = None
    keep_cols: int | None = None

    @property
    def stored_shape(self) -> tuple[int, ...]:
        return self.info.shape

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.stored_shape)
        if self.keep_rows is not None:
            shape[0] = self.keep_rows
        if self.keep_cols is not None:
            shape[1] = self.keep_cols
        return tuple(shape)

    def read(self, rows: tuple[int, int], cols: tuple[int, int] | None = None) -> np.ndarray:
        if len(self.stored_shape) < 2:
            return read_float(self.info)  # norms and scales: small, always read whole
        (r0, r1), (c0, c1) = rows, cols or (0, self.shape[1])
        return read_float(self.info, slice(r0, min(r1, self.shape[0])), slice(c0, min(c1, self.shape[1])))

    def narrowed(self, rows: int | None = None, cols: int | None = None) -> CheckpointTensor:
        return CheckpointTensor(self.info, rows or self.keep_rows, cols or self.keep_cols)


@dataclass(frozen=True, eq=False)
class ArrayTensor:
    """A weight already in memory (an fp32 ONNX file being quantized)."""

    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def read(self, rows: tuple[int, int], cols: tuple[int, int] | None = None) -> np.ndarray:
        if not self.array.ndim:
            return np.ascontiguousarray(self.array, dtype=np.float32)
        block = self.array[rows[0]:rows[1]] if cols is None else self.array[rows[0]:rows[1], cols[0]:cols[1]]
        return np.ascontiguousarray(block, dtype=np.float32)


@dataclass(frozen=True)
class Transposed:
    """The transpose of a 2-D source: its rows are the source's columns, read as column blocks."""

    source: Source

    @property
    def shape(self) -> tuple[int, ...]:
        rows, cols = self.source.shape
        return cols, rows

    def read(self, rows: tuple[int, int], cols: tuple[int, int] | None = None) -> np.ndarray:
        return np.ascontiguousarray(self.source.read(cols or (0, self.shape[1]), rows).T)


@dataclass(frozen=True)
class Window:
    """Rows [r0, r1) and columns [c0, c1) of a 2-D source: one part of a weight split to fit the tensor limit
    (gemma3n/layout.py). Reads go to the source's own window, so a part costs no more than its bytes."""

    source: Source
    row_range: tuple[int, int]
    col_range: tuple[int, int]

    @classmethod
    def of_rows(cls, source: Source, start: int, stop: int) -> Window:
        return cls(source, (start, stop), (0, source.shape[1]))

    @classmethod
    def of_cols(cls, source: Source, start: int, stop: int) -> Window:
        return cls(source, (0, source.shape[0]), (start, stop))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.row_range[1] - self.row_range[0], self.col_range[1] - self.col_range[0]

    def read(self, rows: tuple[int, int], cols: tuple[int, int] | None = None) -> np.ndarray:
        (r0, r1), (c0, c1) = self.row_range, self.col_range
        first, last = cols or (0, c1 - c0)
        return self.source.read((r0 + rows[0], min(r1, r0 + rows[1])), (c0 + first, min(c1, c0 + last)))


def row_blocks(source: Source) -> Iterator[np.ndarray]:
    """Consecutive float32 row blocks of `source` of about BLOCK_BYTES each (at least one row)."""
    shape = source.shape
    if len(shape) < 2:
        yield source.read((0, shape[0] if shape else 1))
        return
    step = max(1, BLOCK_BYTES // (4 * math.prod(shape[1:])))
    for start in range(0, shape[0], step):
        yield source.read((start, min(shape[0], start + step)))


def stub(name: str, data_type: int, dims: list[int] | tuple[int, ...]) -> TensorProto:
    """A data-less initializer: name, type and shape now, bytes when the variant is written."""
    return TensorProto(name=name, data_type=data_type, dims=list(dims))


def spec_stub(spec: TensorSpec) -> TensorProto:
    """The data-less initializer of a tensor the layout names: a "float" is fp32 here, and halved by the fp16
    conversion for fp16 and q4f16 as the layout already counts it."""
    return stub(spec.name, TensorProto.FLOAT if spec.element == "float" else TensorProto.UINT8, spec.shape)


@dataclass(frozen=True, eq=False)
class Derived:
    """Initializers computed together from one source: each block of its rows gives the next bytes of each."""

    source: Source
    outputs: tuple[str, ...]
    compute: Callable[[np.ndarray], tuple[np.ndarray, ...]]

    def arrays(self) -> Iterator[tuple[np.ndarray, ...]]:
        for rows in row_blocks(self.source):
            yield self.compute(rows)


class Pending:
    """The data-less initializers of one graph and how each will be computed, in the order they were added."""

    def __init__(self, graph: onnx.GraphProto, derived: list[Derived] | None = None) -> None:
        self.graph = graph
        self.derived: list[Derived] = list(derived or [])

    def add(self, source: Source, stubs: list[TensorProto], compute: Callable[[np.ndarray], tuple[np.ndarray, ...]]):
        self.graph.initializer.extend(stubs)
        self.derived.append(Derived(source, tuple(s.name for s in stubs), compute))

    def plain(self, name: str, source: Source) -> None:
        """`name` holds the source's float32 values as they are (fp32 weights, transposed ones)."""
        self.add(source, [stub(name, TensorProto.FLOAT, source.shape)], lambda rows: (rows,))

    def keep_only(self, names: set[str]) -> None:
        """Forget derived tensors none of whose outputs is in `names` (the initializers the graph still reads)."""
        self.derived = [d for d in self.derived if any(name in names for name in d.outputs)]


@dataclass
class SessionGraph:
    """One traced session: its ONNX graph, whose weights are data-less initializers, and where they come from."""

    name: str
    model: onnx.ModelProto
    weights: dict[str, Source]
