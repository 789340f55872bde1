"""Safetensors shards, read and written as byte ranges so that no tensor is ever held in memory.

The safetensors format is an 8-byte little-endian header length, a JSON header giving each tensor's
dtype, shape and byte range, then the raw row-major data. This is MatSlice's one reader and writer of it,
with no torch: the slicer copies byte ranges of the parent into the child's shards (inside the kernel
with `os.copy_file_range`, as `cp` does, falling back to `sendfile` or a buffered copy where the kernel
cannot copy between the two filesystems), and the exporter reads blocks of rows or columns as float32
through a memory map (`read_float`). Every damaged file is one `UserError` naming it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gemma3n.errors import UserError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
            "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes lie in a shard."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset of the first byte in `file`
    nbytes: int

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse one shard's header and check that the file holds every byte the header promises."""
    damaged = f"shard {path} has no valid safetensors header: it is corrupt, download it again"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8 or length > 100 << 20:
                raise ValueError
            header = json.loads(f.read(length))
        if not isinstance(header, dict):
            raise ValueError
        header.pop("__metadata__", None)
        base = 8 + length
        tensors = {}
        for name, entry in header.items():
            begin, end = (int(x) for x in entry["data_offsets"])
            shape = tuple(int(d) for d in entry["shape"])
            if entry["dtype"] not in ITEMSIZE or end - begin != math.prod(shape) * ITEMSIZE[entry["dtype"]]:
                raise ValueError
            if base + end > size:
                raise UserError(
                    f"shard {path} is truncated ({size} bytes, its header needs {base + end}): download it again"
                )
            tensors[name] = TensorInfo(path, entry["dtype"], shape, base + begin, end - begin)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"shard {path.name} is missing from {path.parent}: restore it (download again)") from None
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
        raise UserError(damaged) from None
    return tensors


def checkpoint_files(model: Path) -> list[Path]:
    """The shard files of a checkpoint folder, from its index if it has one."""
    index = model / INDEX
    if index.is_file():
        return [model / name for name in sorted(set(_weight_map(index).values()))]
    if (model / SINGLE).is_file():
        return [model / SINGLE]
    raise UserError(f"{model} has no {SINGLE} or {INDEX}: pass a checkpoint folder with safetensors weights")


def _weight_map(index: Path) -> dict[str, str]:
    try:
        return dict(json.loads(index.read_text())["weight_map"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{index} is not a valid safetensors index: restore it (download again)") from None


def read_tensors(model: Path) -> dict[str, TensorInfo]:
    """Every tensor of a checkpoint folder, checked against its index."""
    tensors: dict[str, TensorInfo] = {}
    for file in checkpoint_files(model):
        tensors |= read_header(file)
    index = model / INDEX
    if index.is_file():
        for name, file in _weight_map(index).items():
            if name not in tensors:
                raise UserError(
                    f"{file} lacks tensor {name} that {INDEX} names: the shard is damaged, download it again"
                )
    return tensors


def read_range(f: BinaryIO, start: int, nbytes: int) -> bytes:
    f.seek(start)
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise UserError(f"{f.name} ended early while reading: the shard is truncated, download it again")
    return data


def read_rows(f: BinaryIO, info: TensorInfo, first: int, count: int) -> np.ndarray:
    """Rows [first, first+count) of a 2-D tensor as a (count, row_bytes) uint8 array."""
    row_bytes = info.nbytes // (info.shape or (1,))[0]
    data = read_range(f, info.start + first * row_bytes, count * row_bytes)
    return np.frombuffer(data, dtype=np.uint8).reshape(count, row_bytes)


def to_float32(raw: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Decode raw little-endian bytes of a float tensor as float32 (bfloat16 is the top half of a float32)."""
    flat = np.ascontiguousarray(raw).view(np.uint8)
    if dtype == "BF16":
        values = (flat.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif dtype in ("F16", "F32", "F64"):
        values = flat.view({"F16": np.float16, "F32": np.float32, "F64": np.float64}[dtype]).astype(np.float32)
    else:
        raise UserError(f"a {dtype} tensor is not a float weight: MatSlice reads float32, float16 and bfloat16")
    return values.reshape(shape)


def read_float(info: TensorInfo, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
    """`tensor[rows, cols]` as float32, read through a memory map (a column block is a strided read)."""
    if info.dtype not in ("BF16", "F16", "F32", "F64"):
        to_float32(np.zeros(0, np.uint8), info.dtype, (0,))  # the same one-line refusal
    raw_type = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "F64": np.float64}[info.dtype]
    try:
        whole = np.memmap(info.file, raw_type, "r", info.start, info.shape or (1,))
    except (OSError, ValueError):
        raise UserError(f"{info.file} cannot be read at the bytes its header names: download it again") from None
    block = np.array(whole[rows, cols] if whole.ndim > 1 else whole[rows])
    del whole
    if info.dtype == "BF16":
        return (block.astype(np.uint32) << 16).view(np.float32)
    return block.astype(np.float32)


# Why the kernel may refuse copy_file_range: another filesystem on an older kernel (EXDEV), no support in the
# kernel or the filesystem (ENOSYS, EOPNOTSUPP), or a file type it does not handle (EINVAL, e.g. some FUSE).
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
_COPY_BLOCK = 16 << 20


def copy_bytes(source: BinaryIO, target: BinaryIO, start: int, nbytes: int) -> int:
    """Append up to `nbytes` bytes of `source` from offset `start` to `target`'s position; returns how many.

    `os.copy_file_range` copies inside the kernel; where it cannot (another filesystem, a filesystem
    without support) `os.sendfile` still avoids user copies, and a plain read/write always works.
    """
    try:
        return os.copy_file_range(source.fileno(), target.fileno(), nbytes, start)
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY:
            raise
    try:
        return os.sendfile(target.fileno(), source.fileno(), start, nbytes)
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY:
            raise
    data = os.pread(source.fileno(), min(nbytes, _COPY_BLOCK), start)
    return os.write(target.fileno(), data)


@dataclass(frozen=True)
class OutTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = ITEMSIZE[self.dtype]
        for dim in self.shape:
            count *= dim
        return count


def plan_shards(tensors: list[OutTensor], max_shard_bytes: int) -> list[list[OutTensor]]:
    """Group tensors, in order, into shards of at most `max_shard_bytes` (a bigger tensor stands alone)."""
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def shard_names(count: int) -> list[str]:
    if count == 1:
        return [SINGLE]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def encode_header(tensors: list[OutTensor]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {"dtype": tensor.dtype, "shape": list(tensor.shape),
                               "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    body = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


class ShardWriter:
    """Writes a known list of tensors, in order, as chunks arrive; checks every tensor's byte count."""

    def __init__(self, folder: Path, tensors: list[OutTensor], max_shard_bytes: int):
        self.shards = plan_shards(tensors, max_shard_bytes)
        self.names = shard_names(len(self.shards))
        self.folder = folder
        self._queue = [(shard, tensor) for shard, group in enumerate(self.shards) for tensor in group]
        self._position = -1
        self._file: BinaryIO | None = None
        self._written = 0

    def begin(self, name: str) -> None:
        """Start the next tensor, which must be `name` (the order given at construction)."""
        self._finish_tensor()
        self._position += 1
        shard, tensor = self._queue[self._position]
        if tensor.name != name:
            raise RuntimeError(f"tensor order broken: expected {tensor.name}, got {name}")
        if self._position == 0 or self._queue[self._position - 1][0] != shard:
            self._open(shard)

    def copy_range(self, source: BinaryIO, start: int, nbytes: int) -> None:
        """Append bytes [start, start+nbytes) of `source`, inside the kernel where it can (no user copy)."""
        assert self._file is not None
        while nbytes:
            done = copy_bytes(source, self._file, start, nbytes)
            if done == 0:
                raise UserError(f"{source.name} ended early while reading: the shard is truncated, download it again")
            start, nbytes, self._written = start + done, nbytes - done, self._written + done

    def write(self, data: bytes | memoryview | np.ndarray) -> None:
        buffer = memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else data
        assert self._file is not None
        self._file.write(buffer)
        self._written += len(buffer)

    def close(self) -> None:
        self._finish_tensor()
        if self._position != len(self._queue) - 1:
            raise RuntimeError("not every planned tensor was written")
        self._close_file()
        weight_map = {t.name: self.names[s] for s, group in enumerate(self.shards) for t in group}
        if len(self.shards) > 1:
            total = sum(t.nbytes for group in self.shards for t in group)
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")

    def _finish_tensor(self) -> None:
        if self._position >= 0:
            expected = self._queue[self._position][1]
            if self._written != expected.nbytes:
                raise RuntimeError(f"{expected.name}: wrote {self._written} bytes, expected {expected.nbytes}")
        self._written = 0

    def _open(self, shard: int) -> None:
        self._close_file()
        self._file = (self.folder / self.names[shard]).open("wb", buffering=0)  # raw: copy_range shares the fd
        self._file.write(encode_header(self.shards[shard]))

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
