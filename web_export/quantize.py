"""Write the dtype variants of one traced session that transformers.js can pick, saved the way it loads them.

A variant is the session's graph rewritten for its dtype (MatMulNBits, quantized lookups, fp16) with every
weight computed from its source (`web_export/weights.py`) while it is written, so no variant holds more
than a block of rows of any weight (of columns, for a q8 or fp32 weight written transposed). Saving is
ours rather than onnx's or the quantizers', because the browser needs
* file names the runtime derives from the dtype (`utils/dtypes.js` DEFAULT_DTYPE_SUFFIX_MAPPING);
* external data split into `<file>.onnx_data`, `<file>.onnx_data_1`, ... (`utils/model-loader.js`
  getExternalDataChunkNames), each chunk small enough for one ArrayBuffer (just under 2 GiB in Chrome);
* no single tensor above what a phone's WebGPU can bind (`--max-tensor-bytes`, 256 MiB by default): bigger MatMul
  weights and tables are split into parts (web_export/parts.py);
* byte-identical output for the same input, so bundles can be compared by sha256;
* sizes a plan can predict without tracing: every weight-derived tensor is named, shaped and placed by
  gemma3n/layout.py, the data chunks hold exactly those tensors (constants the tracer makes stay inside the .onnx
  file) and each chunk ends on an aligned boundary, so the chunks' bytes do not depend on the graph's order.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import onnx
from onnx import TensorProto
from tqdm import tqdm

from gemma3n.dtypes import DTYPES
from gemma3n.errors import UserError
from gemma3n.layout import (
    DEFAULT_MAX_FILE_BYTES,
    MAX_CHUNKS,
    MAX_TENSOR_BYTES,
    aligned,
    place,
    stays_inline,
    tensor_limit,
)
from web_export.int8 import lower_matmuls_q8
from web_export.lookup import lower_lookups
from web_export.nbits import lower_matmuls
from web_export.parts import lower_float_matmuls, split_float_gathers
from web_export.weights import ArrayTensor, Derived, Pending, SessionGraph, Source, Transposed, stub


@dataclass(frozen=True)
class SavedModel:
    """Where a session variant was written and what its external data looks like."""

    path: Path
    data_files: tuple[Path, ...]
    largest_tensor: tuple[str, int]


def variant_name(session: str, dtype: str) -> str:
    """`<session><suffix>.onnx`, the file name transformers.js asks for."""
    return f"{session}{DTYPES[dtype].suffix}.onnx"


def quantize(fp32_onnx: Path, dtype: str, out: Path, **options: Any) -> Path:
    """Write the `dtype` variant of an fp32 ONNX file to `out` (a file path, or a folder that gets the standard name).

    Returns the .onnx path; its external data chunks lie beside it. `options` are `write_variant`'s
    (block_size, symmetric, max_file_bytes, max_tensor_bytes).
    """
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    if out.is_dir():
        out = out / variant_name(fp32_onnx.stem, dtype)
    return write_variant(graph_from_onnx(fp32_onnx), dtype, out, **options).path


def graph_from_onnx(path: Path) -> SessionGraph:
    """An fp32 ONNX file as a SessionGraph: its float initializers (all but scalars) become weights, read from memory,
    so they are written where weights go (large ones in the data chunks)."""
    model = onnx.load(path)
    weights: dict[str, Source] = {}
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT and len(tensor.dims) >= 1:
            weights[tensor.name] = ArrayTensor(onnx.numpy_helper.to_array(tensor))
            tensor.CopyFrom(stub(tensor.name, TensorProto.FLOAT, tensor.dims))
    return SessionGraph(Path(path).stem, model, weights)


def write_variant(
    graph: SessionGraph,
    dtype: str,
    path: Path,
    *,
    block_size: int = 32,
    symmetric: bool = True,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_tensor_bytes: int | None = MAX_TENSOR_BYTES,
) -> SavedModel:
    """Write the `dtype` variant of a traced session to `path`, reading its weights as it writes them.

    A MatMul weight or table bigger than `max_tensor_bytes` (one WebGPU binding) is split into parts that fit;
    `max_tensor_bytes=None` lifts that limit (for Node/CPU-only bundles), but no tensor may exceed one data chunk
    (`max_file_bytes`), so bigger ones are split to fit a chunk. Any other tensor above the limit is refused.

    q4 (MatMulNBits blocks, 4-bit lookups), q8 (MatMulInteger codes, 8-bit lookups) and fp32 stream: each
    weight is read a block of rows at a time and its derived bytes go straight to the data chunks, so memory
    stays flat whatever the model size; fp16 and q4f16 too, as onnxruntime's float16 converter only retypes
    the data-less weights and their values are halved as they are written.
    """
    kind = DTYPES[dtype]
    limit = tensor_limit(max_tensor_bytes, max_file_bytes)
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    pending = Pending(model.graph)
    if kind.matmul == "int4":
        lower_matmuls(model, graph.weights, pending, block=block_size, symmetric=symmetric, dtype=dtype, limit=limit)
    elif kind.matmul == "int8":
        lower_matmuls_q8(model, graph.weights, pending, limit=limit)
    else:
        lower_float_matmuls(model, graph.weights, pending, dtype=dtype, limit=limit)
    if kind.lookup_bits:
        lower_lookups(model, graph.weights, pending, bits=kind.lookup_bits, block_size=block_size,
                      float_bytes=kind.float_bytes, limit=limit)
    split_float_gathers(model, graph.weights, pending, float_bytes=kind.float_bytes, limit=limit)
    fold_weights(model, graph.weights, pending)
    # fail before minutes of writing; fp16 will halve the float weights
    check_tensor_limit(model, max_tensor_bytes, max_file_bytes, float_bytes=kind.float_bytes,
                       weights={n for d in pending.derived for n in d.outputs})
    if kind.float_bytes == 2:
        model, pending = to_fp16(model, pending)
    return save_chunked(model, path, pending=pending, max_file_bytes=max_file_bytes, max_tensor_bytes=max_tensor_bytes)


def fold_weights(model: onnx.ModelProto, weights: dict[str, Source], pending: Pending) -> None:
    """Give every weight the graph still reads as float its fp32 values, and drop what nothing reads.

    Transpose(weight) (a traced Linear left unquantized) becomes an initializer holding the transposed values,
    as the exporter's own constant folding would make it, so MatMul reads an initializer.
    """
    graph = model.graph
    folded = []
    for node in graph.node:
        source = weights.get(node.input[0]) if node.op_type == "Transpose" else None
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
        if source is None or len(source.shape) != 2 or perm != [1, 0]:
            folded.append(node)
            continue
        pending.plain(node.output[0], Transposed(source))
    del graph.node[:]
    graph.node.extend(folded)
    prune(model, pending)
    keep = [t for t in graph.initializer if t.name not in weights]  # the weights' own stubs
    del graph.initializer[:]
    graph.initializer.extend(keep)
    read = read_names(model)
    for name, source in weights.items():
        if name in read:
            pending.plain(name, source)


def read_names(model: onnx.ModelProto) -> set[str]:
    """Every value name a node of any graph reads, plus the graph outputs."""
    names = {o.name for o in model.graph.output}
    for graph in all_graphs(model):
        for node in graph.node:
            names.update(node.input)
    return names


def prune(model: onnx.ModelProto, pending: Pending) -> None:
    """Drop nodes whose outputs nothing reads, then initializers nothing reads, until nothing changes."""
    graph = model.graph
    while True:
        read = read_names(model)
        nodes = [n for n in graph.node if any(o in read for o in n.output)]
        if len(nodes) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(nodes)
    read = read_names(model)
    keep = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    pending.keep_only(read)


def materialize(model: onnx.ModelProto, pending: Pending) -> None:
    """Compute every pending initializer into the graph (those small enough to stay inside the .onnx file)."""
    tensors = {t.name: t for t in model.graph.initializer}
    for derived in pending.derived:
        pieces = list(zip(*derived.arrays(), strict=True))
        for name, arrays in zip(derived.outputs, pieces, strict=True):
            tensor = tensors[name]
            data = np.concatenate([a.reshape(-1) for a in arrays]).astype(onnx.helper.tensor_dtype_to_np_dtype(
                tensor.data_type), copy=False)
            tensor.raw_data = data.tobytes()
    pending.derived.clear()


def to_fp16(model: onnx.ModelProto, pending: Pending) -> tuple[onnx.ModelProto, Pending]:
    """fp16 weights and activations with fp32 graph inputs/outputs, so the JS side feeds the same tensors.

    onnxruntime's converter rewrites the graph and retypes each float initializer it decides to halve; the
    data-less pending ones keep their names, so their values are halved the converter's way as they are written.
    """
    from onnxruntime.transformers import float16

    big = model.ByteSize() > 1_800_000_000  # shape inference serializes the model and cannot pass 2 GB
    # The converter reads an initializer's shape by decoding its data; a data-less one has it in its dims.
    with mock.patch.object(float16, "make_value_info_from_tensor",
                           lambda t: onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))):
        model = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=big)
    types = {t.name: t.data_type for t in model.graph.initializer}

    def halved(derived: Derived) -> Derived:
        half = [types[name] == TensorProto.FLOAT16 for name in derived.outputs]
        if not any(half):
            return derived
        return Derived(derived.source, derived.outputs, lambda rows: tuple(
            float16.convert_np_to_float16(a) if h else a for a, h in zip(derived.compute(rows), half, strict=True)))

    return model, Pending(model.graph, [halved(d) for d in pending.derived])


def strip_metadata(model: onnx.ModelProto) -> None:
    """Drop doc strings and metadata_props everywhere: they may carry build paths and tool versions."""
    del model.metadata_props[:]
    model.doc_string = ""
    for graph in all_graphs(model):
        graph.doc_string = ""
        del graph.metadata_props[:]
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
        for value in (*graph.input, *graph.output, *graph.value_info):
            value.doc_string = ""
            del value.metadata_props[:]
        for tensor in graph.initializer:
            tensor.doc_string = ""
            del tensor.metadata_props[:]
    for function in model.functions:
        function.doc_string = ""
        del function.metadata_props[:]
        for node in function.node:
            node.doc_string = ""
            del node.metadata_props[:]


def all_graphs(model: onnx.ModelProto) -> list[onnx.GraphProto]:
    """The main graph and every subgraph held in node attributes, at any depth."""
    graphs = [model.graph]
    for graph in graphs:
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attr.graphs)
    return graphs


def tensor_bytes(tensor: TensorProto) -> int:
    """Size of a tensor's payload from its type and shape: the same whether it is inline, external or pending."""
    return math.prod(tensor.dims) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def largest_tensor(model: onnx.ModelProto, float_bytes: int = 4, among: set[str] | None = None) -> tuple[str, int]:
    """(name, bytes) of the largest initializer (of those named in `among`, when given): it decides which GPUs can
    hold the session. `float_bytes=2` sizes float32 tensors as the fp16 conversion will store them."""
    sizes = [
        (t.name, tensor_bytes(t) * float_bytes // 4 if t.data_type == TensorProto.FLOAT else tensor_bytes(t))
        for g in all_graphs(model)
        for t in g.initializer
        if among is None or t.name in among
    ]
    return max(sizes, key=lambda item: (item[1], item[0]), default=("", 0))


def check_tensor_limit(
    model: onnx.ModelProto,
    limit: int | None = MAX_TENSOR_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    float_bytes: int = 4,
    weights: set[str] | None = None,
) -> None:
    """Fail on any weight above `limit` (one WebGPU binding) or any tensor above `max_file_bytes` (one data chunk):
    after the splits, only a weight that is neither a MatMul's nor a Gathered table's can still be that big. The
    tensor limit holds for the `weights` (all initializers when None): the traced constants beside them (the
    decoder's rotary tables, 196 kB at E4B's head_dim) cannot be split and are far below any adapter's limit."""
    name, size = largest_tensor(model, float_bytes, weights)
    if limit is not None and size > limit:
        raise UserError(
            f"initializer {name!r} is {size:,} bytes, over the {limit:,}-byte single-tensor limit "
            "(one WebGPU binding), and only MatMul weights and tables can be split: raise --max-tensor-bytes"
        )
    name, size = largest_tensor(model, float_bytes)
    if size > tensor_limit(None, max_file_bytes):
        raise UserError(
            f"initializer {name!r} is {size:,} bytes, over the {max_file_bytes:,}-byte external data chunk size; "
            "a tensor cannot span two chunks"
        )


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
