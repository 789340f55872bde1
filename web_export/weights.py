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

from gemma3n.safetensors import TensorInfo, read_float

BLOCK_BYTES = 64 << 20  # fp32 bytes of one block of rows


class Source(Protocol):
    """A 2-D (or smaller) float tensor whose rows, or columns, can be read in blocks, as float32."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def rows(self, start: int, stop: int) -> np.ndarray: ...

    def cols(self, start: int, stop: int) -> np.ndarray: ...


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

    def rows(self, start: int, stop: int) -> np.ndarray:
        if len(self.stored_shape) < 2:
            return read_float(self.info)  # norms and scales: small, always read whole
        return read_float(self.info, slice(start, stop), slice(0, self.shape[1]))

    def cols(self, start: int, stop: int) -> np.ndarray:
        """Columns [start, stop) of every kept row (a strided read: one short run per row)."""
        return read_float(self.info, slice(0, self.shape[0]), slice(start, min(stop, self.shape[1])))

    def narrowed(self, rows: int | None = None, cols: int | None = None) -> CheckpointTensor:
        return CheckpointTensor(self.info, rows or self.keep_rows, cols or self.keep_cols)


@dataclass(frozen=True, eq=False)
class ArrayTensor:
    """A weight already in memory (an fp32 ONNX file being quantized)."""

    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.array[start:stop] if self.array.ndim else self.array, dtype=np.float32)

    def cols(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.array[:, start:stop], dtype=np.float32)


@dataclass(frozen=True)
class Transposed:
    """The transpose of a 2-D source: its rows are the source's columns, read as column blocks."""

    source: Source

    @property
    def shape(self) -> tuple[int, ...]:
        rows, cols = self.source.shape
        return cols, rows

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.source.cols(start, stop).T)

    def cols(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.source.rows(start, stop).T)


def row_blocks(source: Source) -> Iterator[np.ndarray]:
    """Consecutive float32 row blocks of `source` of about BLOCK_BYTES each (at least one row)."""
    shape = source.shape
    if len(shape) < 2:
        yield source.rows(0, shape[0] if shape else 1)
        return
    step = max(1, BLOCK_BYTES // (4 * math.prod(shape[1:])))
    for start in range(0, shape[0], step):
        yield source.rows(start, min(shape[0], start + step))


def stub(name: str, data_type: int, dims: list[int] | tuple[int, ...]) -> TensorProto:
    """A data-less initializer: name, type and shape now, bytes when the variant is written."""
    return TensorProto(name=name, data_type=data_type, dims=list(dims))


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
