"""Saving a variant the way transformers.js loads it: the .onnx file and its external data in numbered chunks.

The weights are the pending tensors of `web_export.weights`: computed a block of source rows at a time and written
with `pwrite` at their place in the chunks as they come, so no weight is ever whole in memory. Chunk names are the
ones transformers.js derives (`<file>.onnx_data`, `<file>.onnx_data_1`, ...), each under one ArrayBuffer's size,
and the layout (`gemma3n.layout.place`) depends only on the tensors, so the bytes are the same on every run and a
plan can predict them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from tqdm import tqdm

from gemma3n.layout import DEFAULT_MAX_FILE_BYTES, MAX_CHUNKS, MAX_TENSOR_BYTES, aligned, place, stays_inline
from web_export.graph import all_graphs, check_tensor_limit, largest_tensor, materialize, strip_metadata, tensor_bytes
from web_export.weights import Pending


@dataclass(frozen=True)
class SavedModel:
    """Where a session variant was written and what its external data looks like."""

    path: Path
    data_files: tuple[Path, ...]
    largest_tensor: tuple[str, int]


def save_chunked(
    model: onnx.ModelProto,
    path: Path,
    *,
    pending: Pending | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_tensor_bytes: int | None = MAX_TENSOR_BYTES,
) -> SavedModel:
    """Save with the weights in `<name>_data`, `<name>_data_1`, ... chunks of at most `max_file_bytes` each.

    The weights are the `pending` tensors: computed a block of source rows at a time and written as they come,
    placed in graph order at aligned offsets (`gemma3n.layout.place`), so the bytes depend only on the model.
    Small ones (`gemma3n.layout.stays_inline`), and every other initializer, stay inside the .onnx file.
    """
    path = Path(path)
    pending = pending or Pending(model.graph)
    strip_metadata(model)
    check_tensor_limit(model, max_tensor_bytes, max_file_bytes, weights={n for d in pending.derived for n in d.outputs})
    for stale in path.parent.glob(path.name + "_data*"):
        stale.unlink()
    largest = largest_tensor(model)
    inline_small(model, pending)
    layout = assign_chunks(model, path.name, max_file_bytes, {n for d in pending.derived for n in d.outputs})
    write_chunks(model, layout, pending, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    data_files = sorted({location for location, _, _ in layout.values()}, key=lambda n: (len(n), n))
    return SavedModel(path, tuple(path.parent / name for name in data_files), largest)


def inline_small(model: onnx.ModelProto, pending: Pending) -> None:
    """Compute now the pending tensors computed together that are all small: they stay inside the .onnx file."""
    sizes = {t.name: tensor_bytes(t) for t in model.graph.initializer}
    small = [d for d in pending.derived if stays_inline(sizes[name] for name in d.outputs)]
    materialize(model, Pending(model.graph, small))
    pending.keep_only({n for d in pending.derived if d not in small for n in d.outputs})


def assign_chunks(
    model: onnx.ModelProto, name: str, max_file_bytes: int, pending: set[str]
) -> dict[str, tuple[str, int, int]]:
    """Place each pending (weight-derived) initializer in a chunk file: {tensor: (chunk, offset, length)}.

    Every other initializer is a constant the tracer or a rewrite made (rotary frequencies, the audio timing
    signal, shape vectors), a few kilobytes at most, and stays inside the .onnx file whatever its size, so the
    chunks hold the weights alone (`gemma3n.layout.place`)."""
    tensors = []
    for graph in all_graphs(model):
        for tensor in graph.initializer:
            if tensor.data_location == TensorProto.EXTERNAL:
                raise ValueError(f"tensor {tensor.name!r} still refers to external data; load the model with weights")
            if tensor.name in pending:
                tensors.append((tensor.name, tensor_bytes(tensor)))
    placed = place([length for _, length in tensors], max_file_bytes)
    layout = {name_: (chunk_name(name, index), offset, length)
              for (name_, length), (index, offset) in zip(tensors, placed, strict=True)}
    chunks = {location for location, _, _ in layout.values()}
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"{name}: {len(chunks)} external data chunks, transformers.js loads at most {MAX_CHUNKS}")
    return layout


def write_chunks(
    model: onnx.ModelProto, layout: dict[str, tuple[str, int, int]], pending: Pending, folder: Path
) -> None:
    """Write every laid-out tensor: inline bytes moved out of the proto, pending ones computed block by block."""
    folder.mkdir(parents=True, exist_ok=True)
    ends: dict[str, int] = {}
    for location, offset, length in layout.values():
        ends[location] = max(ends.get(location, 0), aligned(offset + length))  # chunks end aligned (module doc)
    handles = {location: open(folder / location, "wb") for location in sorted(ends)}  # noqa: SIM115
    try:
        for location, handle in handles.items():
            handle.truncate(ends[location])
        tensors = {t.name: t for g in all_graphs(model) for t in g.initializer}
        computed = {name for d in pending.derived for name in d.outputs}
        for name, (location, offset, length) in layout.items():
            tensor = tensors[name]
            if name not in computed:
                data = tensor.raw_data if tensor.HasField("raw_data") else onnx.numpy_helper.to_array(tensor).tobytes()
                os.pwrite(handles[location].fileno(), data, offset)
            set_external(tensor, location, offset, length)
        total = sum(layout[name][2] for d in pending.derived for name in d.outputs)
        label = min(layout.values())[0].split(".onnx")[0] if layout else folder.name
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"writing {label}", leave=False) as bar:
            for derived in pending.derived:
                written = dict.fromkeys(derived.outputs, 0)
                for arrays in derived.arrays():
                    for name, array in zip(derived.outputs, arrays, strict=True):
                        location, offset, _ = layout[name]
                        data = np.ascontiguousarray(array).tobytes()
                        os.pwrite(handles[location].fileno(), data, offset + written[name])
                        written[name] += len(data)
                        bar.update(len(data))
                for name, count in written.items():
                    if count != layout[name][2]:
                        raise AssertionError(f"{name}: wrote {count} bytes, its shape holds {layout[name][2]}")
    finally:
        for handle in handles.values():
            handle.close()


def set_external(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        tensor.ClearField(field)
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def chunk_name(onnx_name: str, index: int) -> str:
    """`model.onnx_data`, `model.onnx_data_1`, ...: transformers.js getExternalDataChunkNames."""
    return f"{onnx_name}_data" + ("" if index == 0 else f"_{index}")


def external_chunk_count(path: Path) -> int:
    """Number of `<file>_data*` chunks a saved model refers to (what config.json must declare)."""
    model = onnx.load(path, load_external_data=False)
    locations = {
        e.value
        for g in all_graphs(model)
        for t in g.initializer
        if t.data_location == TensorProto.EXTERNAL
        for e in t.external_data
        if e.key == "location"
    }
    expected = {chunk_name(Path(path).name, i) for i in range(len(locations))}
    if locations != expected:
        raise ValueError(f"{path}: external data files {sorted(locations)} are not the chunk names {sorted(expected)}")
    return len(locations)
