"""Turn one fp32 ONNX session into the dtype variants transformers.js can pick, saved the way it loads them.

Why a module of its own: the quantizers in onnxruntime each save models their own way (one external data file
of any size, metadata, tensors in arbitrary places), while the browser needs
* file names the runtime derives from the dtype (`utils/dtypes.js` DEFAULT_DTYPE_SUFFIX_MAPPING);
* external data split into `<file>.onnx_data`, `<file>.onnx_data_1`, ... (`utils/model-loader.js`
  getExternalDataChunkNames), each chunk small enough for one ArrayBuffer (just under 2 GiB in Chrome);
* no single weight above what one WebGPU buffer can hold (1 GiB on common adapters);
* byte-identical output for the same input, so bundles can be compared by sha256.
So every variant goes through the same cleaning and chunked, deterministic save.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

from web_export.lookup import quantize_lookups

SUFFIXES = {"fp32": "", "fp16": "_fp16", "q8": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}
DTYPES = tuple(SUFFIXES)
# Chrome refuses ArrayBuffers of 0x7fe00000 bytes (~2 GiB) and more; stay well below so a chunk is always
# fetchable, yet above 1 GiB so the largest tensor WebGPU can hold (MAX_TENSOR_BYTES) still fits one chunk.
DEFAULT_MAX_FILE_BYTES = 1_500_000_000
MAX_TENSOR_BYTES = 1 << 30  # WebGPU maxBufferSize on many adapters
MAX_CHUNKS = 100  # transformers.js MAX_EXTERNAL_DATA_CHUNKS (utils/hub/constants.js)
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inside the .onnx file, as onnx.save does by default
ALIGNMENT = 64


@dataclass(frozen=True)
class SavedModel:
    """Where a session variant was written and what its external data looks like."""

    path: Path
    data_files: tuple[Path, ...]
    largest_tensor: tuple[str, int]


def variant_name(session: str, dtype: str) -> str:
    """`<session><suffix>.onnx`, the file name transformers.js asks for."""
    if dtype not in SUFFIXES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {list(SUFFIXES)}")
    return f"{session}{SUFFIXES[dtype]}.onnx"


def quantize(
    fp32_onnx: Path,
    dtype: str,
    out: Path,
    *,
    block_size: int = 32,
    symmetric: bool = True,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_tensor_bytes: int | None = MAX_TENSOR_BYTES,
) -> Path:
    """Write the `dtype` variant of `fp32_onnx` to `out` (a file path, or a folder that gets the standard name).

    Returns the .onnx path; its external data chunks lie beside it. `max_tensor_bytes=None` lifts the
    WebGPU single-buffer limit (for Node/CPU-only bundles); a tensor above `max_file_bytes` is always refused
    because one tensor cannot span two chunks.
    """
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    if out.is_dir():
        out = out / variant_name(fp32_onnx.stem, dtype)
    model = convert(onnx.load(fp32_onnx), dtype, block_size=block_size, symmetric=symmetric,
                    max_tensor_bytes=max_tensor_bytes)
    save_chunked(model, out, max_file_bytes=max_file_bytes, max_tensor_bytes=max_tensor_bytes)
    return out


def convert(model: onnx.ModelProto, dtype: str, *, block_size: int = 32, symmetric: bool = True,
            max_tensor_bytes: int | None = MAX_TENSOR_BYTES) -> onnx.ModelProto:
    """The in-memory `dtype` variant of an fp32 model (weights loaded)."""
    if dtype == "fp32":
        return model
    if dtype == "fp16":
        return to_fp16(model)
    if dtype == "q8":
        return to_q8(model, max_tensor_bytes=max_tensor_bytes)
    if dtype == "q4":
        return to_q4(model, block_size=block_size, symmetric=symmetric, max_tensor_bytes=max_tensor_bytes)
    if dtype == "q4f16":
        return to_fp16(to_q4(model, block_size=block_size, symmetric=symmetric, max_tensor_bytes=max_tensor_bytes))
    raise ValueError(f"unknown dtype {dtype!r}; known: {list(SUFFIXES)}")


def to_q4(model: onnx.ModelProto, *, block_size: int = 32, symmetric: bool = True,
          max_tensor_bytes: int | None = MAX_TENSOR_BYTES) -> onnx.ModelProto:
    """MatMul -> MatMulNBits (4-bit blocks along K), and embedding tables -> 4-bit quantized lookups.

    The lookups are built from standard ops (web_export/lookup.py) rather than GatherBlockQuantized,
    which onnxruntime-web's WASM backend cannot run; they are always symmetric.
    """
    with root_logger_kept():
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=block_size,
        is_symmetric=symmetric,
        op_types_to_quantize=("MatMul",),
        quant_axes=(("MatMul", 0),),
    )
    with quiet_logging():
        quantizer.process()
    return quantize_lookups(quantizer.model.model, bits=4, block_size=block_size, max_tensor_bytes=max_tensor_bytes)


@contextmanager
def root_logger_kept() -> Iterator[None]:
    """Undo what importing onnxruntime.quantization does: its matmul_nbits_quantizer module calls
    logging.basicConfig(INFO), which would make every later library log (onnx_ir's passes: a line per
    initializer) print to the user's terminal."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


@contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence INFO records while a quantizer runs: they log one line per node, and matmul_nbits_quantizer
    calls logging.basicConfig(level=INFO) at import, which turns the root logger on for everyone."""
    logging.disable(logging.WARNING)  # also onnxruntime's advice to pre-process, printed once per session
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def to_q8(model: onnx.ModelProto, *, max_tensor_bytes: int | None = MAX_TENSOR_BYTES) -> onnx.ModelProto:
    """Dynamic int8 quantization of MatMul weights (activations quantized at run time), 8-bit lookups.

    Conv stays fp32: ConvInteger has no WebGPU kernel and the encoders' convolutions are small next to
    their matmuls.
    """
    with root_logger_kept():
        from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src, save_as_external_data=True, location="in.onnx_data")
        with quiet_logging():
            quantize_dynamic(
                src,
                dst,
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QUInt8,
                use_external_data_format=True,
                extra_options={"EnableSubgraph": True},
            )
        return quantize_lookups(onnx.load(dst), bits=8, block_size=32, max_tensor_bytes=max_tensor_bytes)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and activations with fp32 graph inputs/outputs, so the JS side feeds the same tensors."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    big = model.ByteSize() > 1_800_000_000  # shape inference serializes the model and cannot pass 2 GB
    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=big)


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
    """Size of a tensor's payload (raw or typed fields), loaded in memory."""
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return len(onnx.numpy_helper.to_array(tensor).tobytes())


def largest_tensor(model: onnx.ModelProto) -> tuple[str, int]:
    """(name, bytes) of the largest initializer: it decides which GPUs can hold the session."""
    sizes = [(t.name, tensor_bytes(t)) for g in all_graphs(model) for t in g.initializer]
    return max(sizes, key=lambda item: (item[1], item[0]), default=("", 0))


def check_tensor_limit(
    model: onnx.ModelProto, limit: int | None = MAX_TENSOR_BYTES, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> None:
    """Fail on any weight above `limit` (one WebGPU buffer) or above `max_file_bytes` (one data chunk)."""
    name, size = largest_tensor(model)
    if limit is not None and size > limit:
        raise ValueError(
            f"initializer {name!r} is {size:,} bytes, over the {limit:,}-byte single-tensor limit "
            "(one WebGPU buffer); quantize it further or split the table"
        )
    if size > max_file_bytes:
        raise ValueError(
            f"initializer {name!r} is {size:,} bytes, over the {max_file_bytes:,}-byte external data chunk size; "
            "a tensor cannot span two chunks"
        )


def save_chunked(
    model: onnx.ModelProto,
    path: Path,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_tensor_bytes: int | None = MAX_TENSOR_BYTES,
) -> SavedModel:
    """Save with weights in `<name>_data`, `<name>_data_1`, ... chunks of at most `max_file_bytes` each.

    Tensors are placed in graph order at ALIGNMENT-aligned offsets, so the bytes depend only on the model.
    """
    path = Path(path)
    strip_metadata(model)
    check_tensor_limit(model, max_tensor_bytes, max_file_bytes)
    for stale in path.parent.glob(path.name + "_data*"):
        stale.unlink()
    chunks = assign_chunks(model, path.name, max_file_bytes)
    write_chunks(chunks, path.parent)
    largest = largest_tensor_after_offload(chunks, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return SavedModel(path, tuple(path.parent / name for name in chunks), largest)


def assign_chunks(model: onnx.ModelProto, name: str, max_file_bytes: int) -> dict[str, list[tuple[TensorProto, bytes]]]:
    """Move each large initializer's bytes out of the proto and point it at its chunk file and offset."""
    chunks: dict[str, list[tuple[TensorProto, bytes]]] = {}
    index, used = 0, 0
    for graph in all_graphs(model):
        for tensor in graph.initializer:
            data = payload(tensor)
            if data is None:
                continue
            start = -(-used // ALIGNMENT) * ALIGNMENT
            if used and start + len(data) > max_file_bytes:
                index, start = index + 1, 0
            location = chunk_name(name, index)
            set_external(tensor, location, start, len(data))
            chunks.setdefault(location, []).append((tensor, data))
            used = start + len(data)
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"{name}: {len(chunks)} external data chunks, transformers.js loads at most {MAX_CHUNKS}")
    return chunks


def payload(tensor: TensorProto) -> bytes | None:
    """The raw little-endian bytes of a tensor worth storing externally, or None to keep it inline."""
    if tensor.data_location == TensorProto.EXTERNAL:
        raise ValueError(f"tensor {tensor.name!r} still refers to external data; load the model with its weights")
    if tensor_bytes(tensor) < EXTERNAL_MIN_BYTES:
        return None
    if not tensor.HasField("raw_data"):
        array = onnx.numpy_helper.to_array(tensor)
        tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    return tensor.raw_data


def set_external(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def chunk_name(onnx_name: str, index: int) -> str:
    """`model.onnx_data`, `model.onnx_data_1`, ...: transformers.js getExternalDataChunkNames."""
    return f"{onnx_name}_data" + ("" if index == 0 else f"_{index}")


def write_chunks(chunks: dict[str, list[tuple[TensorProto, bytes]]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for location, tensors in chunks.items():
        with open(folder / location, "wb") as handle:
            for tensor, data in tensors:
                offset = int(next(e.value for e in tensor.external_data if e.key == "offset"))
                handle.write(b"\0" * (offset - handle.tell()))
                handle.write(data)


def largest_tensor_after_offload(
    chunks: dict[str, list[tuple[TensorProto, bytes]]], model: onnx.ModelProto
) -> tuple[str, int]:
    """Largest initializer, counting offloaded ones by their external length."""
    sizes = [(t.name, len(data)) for tensors in chunks.values() for t, data in tensors]
    sizes += [(t.name, len(t.raw_data)) for g in all_graphs(model) for t in g.initializer if t.HasField("raw_data")]
    return max(sizes, key=lambda item: (item[1], item[0]), default=("", 0))


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


def largest_tensor_in_file(path: Path) -> tuple[str, int]:
    """(name, bytes) of the largest initializer of a saved model, read without loading its external data."""
    model = onnx.load(path, load_external_data=False)
    sizes = []
    for graph in all_graphs(model):
        for tensor in graph.initializer:
            if tensor.data_location == TensorProto.EXTERNAL:
                sizes.append((tensor.name, int(next(e.value for e in tensor.external_data if e.key == "length"))))
            else:
                sizes.append((tensor.name, tensor_bytes(tensor)))
    return max(sizes, key=lambda item: (item[1], item[0]), default=("", 0))
