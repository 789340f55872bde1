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

This module lowers a session for its dtype; `web_export.graph` holds the graph utilities it checks and tidies with,
and `web_export.chunks` the chunked saving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import onnx
from onnx import TensorProto

from gemma3n.dtypes import DTYPES
from gemma3n.layout import DEFAULT_MAX_FILE_BYTES, MAX_TENSOR_BYTES, tensor_limit
from web_export.chunks import SavedModel, save_chunked
from web_export.graph import check_tensor_limit, prune, read_names
from web_export.int8 import lower_matmuls_q8
from web_export.lookup import lower_lookups
from web_export.nbits import lower_matmuls
from web_export.parts import lower_float_matmuls, split_float_gathers
from web_export.weights import ArrayTensor, Derived, Pending, SessionGraph, Source, Transposed, stub


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
