"""Streamed embeddings: the embed_tokens session of a bundle rewritten as a row file a page reads by HTTP Range.

Gemma 3n reads one row of its text table and one of its per-layer table for each token, yet the embed_tokens
session holds both tables whole (E2B at q4: 1.59 GB of a 3.11 GB download). A row file (layout:
gemma3n/rows.py) holds, for each token id, its record: the two rows exactly as the session stores them (4- or 8-bit
codes and per-block scales, or float32), so a page fetches the records of the ids a prompt uses and computes what
the session would. The vision and audio ids' inputs_embeds, which the session computes with the small vision and
audio embedders, are taken from the session itself (onnxruntime), so they are what it computes; and every written
file is decoded and compared with the session before it is used.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gemma3n.dtypes import DTYPES
from gemma3n.errors import UserError
from gemma3n.rows import MAGIC, Header, Table, file_bytes, header_bytes, layout, rows_name
from web_export.lookup import OFFSET

TEXT_TABLE = "text_model.embed_tokens.weight"
PER_LAYER_TABLE = "text_model.embed_tokens_per_layer.weight"
CHECK_IDS = 4096  # ids compared with the session after writing (all of them in a smaller vocabulary)
TOLERANCE = 1e-6  # the session's own float32 products: nothing is summed, so nothing should differ at all


# --- Writing ---------------------------------------------------------------------------------------------------------
def session_tables(model: onnx.ModelProto, dtype: str) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The text and per-layer tables as the session stores them: {table: (codes or floats, scales or None)}, their
    column parts joined (parts split on block boundaries, so joined parts are the unsplit rows)."""
    bits = DTYPES[dtype].lookup_bits
    arrays = {t.name: t for t in model.graph.initializer}
    found = {}
    for table in (TEXT_TABLE, PER_LAYER_TABLE):
        if bits:
            codes = _parts(arrays, f"{table}/q{bits}/codes_")
            scales = [s.astype(np.float32) for s in _parts(arrays, f"{table}/q{bits}/scales_")]
            if not codes:
                raise UserError(f"the {dtype} embed_tokens session has no quantized lookup of {table}: "
                                f"use --embeddings bundled for this checkpoint")
            found[table] = (np.concatenate(codes, axis=1), np.concatenate(scales, axis=1))
        else:
            names = [table] if table in arrays else sorted((n for n in arrays if n.startswith(f"{table}_part")),
                                                           key=lambda n: int(n.rsplit("part", 1)[1]))
            found[table] = (np.concatenate([numpy_helper.to_array(arrays[n]) for n in names], axis=1)
                            .astype(np.float32), None)
    return found


def _parts(arrays: dict[str, onnx.TensorProto], prefix: str) -> list[np.ndarray]:
    """The initializers named `<prefix><n>`, in the order of n (a lookup's column parts)."""
    names = sorted((n for n in arrays if n.startswith(prefix)), key=lambda n: int(n[len(prefix):]))
    return [numpy_helper.to_array(arrays[n]) for n in names]


def _records(header: Header, tables: dict[str, tuple[np.ndarray, np.ndarray | None]], first: int,
             stop: int) -> bytes:
    """The records of ids [first, stop)."""
    ids = np.arange(first, stop)
    parts = []
    for table, rows in ((TEXT_TABLE, ids), (PER_LAYER_TABLE, np.where(ids < header.per_layer_vocab, ids, 0))):
        codes, scales = tables[table]
        parts.append(np.ascontiguousarray(codes[rows]).view(np.uint8).reshape(len(ids), -1))
        if scales is not None:
            parts.append(np.ascontiguousarray(scales[rows].astype("<f4")).view(np.uint8).reshape(len(ids), -1))
    return np.concatenate(parts, axis=1).tobytes()


def write_rows(session_file: Path, dtype: str, text_config: Any, hard_start: int | None, out: Path, *,
               block_size: int = 32) -> dict[str, Any]:
    """Write the row file of the embed_tokens session at `session_file` (one dtype) to `out`, check it against the
    session in onnxruntime, and return its manifest record (file name, bytes, id, index_end)."""
    model = onnx.load(session_file)
    tables = session_tables(model, dtype)
    header = layout(dtype, text_config.vocab_size, text_config.vocab_size_per_layer_input, text_config.hidden_size,
                    text_config.num_hidden_layers, text_config.hidden_size_per_layer_input, hard_start,
                    block_size=block_size, text_scale=float(np.float32(text_config.hidden_size ** 0.5)),
                    per_layer_scale=float(np.float32(text_config.hidden_size_per_layer_input ** 0.5)))
    del model  # its tables are copied out; the session below reads the file again
    session = _session(session_file)
    hard = _embed(session, np.arange(hard_start, header.vocab_size))[0] if hard_start is not None else None
    # the blocks first, at their offsets, hashed as they pass; then the header and the index that name them
    digests = []
    with open(out, "wb") as handle:
        handle.seek(header.records_offset)
        for j, block in enumerate(_blocks(header, tables, hard)):
            if j == header.record_blocks:
                handle.seek(header.hard_offset)
            handle.write(block)
            digests.append(hashlib.sha256(block).digest())
        handle.truncate(file_bytes(header))
        index = b"".join(digests)
        header = replace(header, id=hashlib.sha256(index).hexdigest())
        head = header_bytes(header)
        if len(head) > header.index_offset:
            raise AssertionError(f"row file header grew past its slot ({len(head)} > {header.index_offset} bytes)")
        handle.seek(0)
        handle.write(head.ljust(header.index_offset, b" "))
        handle.write(index.ljust(header.records_offset - header.index_offset, b"\0"))
    if out.stat().st_size != file_bytes(header):
        raise AssertionError(f"{out} is {out.stat().st_size} bytes, its layout says {file_bytes(header)}")
    check_rows(out, session)
    return {"file": out.name, "bytes": out.stat().st_size, "id": header.id, "index_end": header.index_end}


def _blocks(header: Header, tables: dict, hard: np.ndarray | None):
    for first in range(0, header.vocab_size, header.records_per_block):
        yield _records(header, tables, first, min(header.vocab_size, first + header.records_per_block))
    for first in range(0, header.hard_rows, header.hard_per_block):
        yield np.ascontiguousarray(hard[first:first + header.hard_per_block].astype("<f4")).tobytes()


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _embed(session, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The session's (inputs_embeds, per_layer_inputs) for `ids`, one batch row of them."""
    embeds, per_layer = session.run(["inputs_embeds", "per_layer_inputs"], {"input_ids": ids[None].astype(np.int64)})
    return embeds[0], per_layer[0]


# --- Reading (the loader's arithmetic, in numpy: tests and the check after writing) ---------------------------------
def read_header(path: Path) -> Header:
    with open(path, "rb") as handle:
        start = handle.read(12)
        if start[:8] != MAGIC:
            raise UserError(f"{path} is not a MatSlice row file (it does not start with {MAGIC!r}): export again")
        (length,) = struct.unpack("<I", start[8:12])
        data = json.loads(handle.read(length))
    data["text"], data["per_layer"] = Table(**data["text"]), Table(**data["per_layer"])
    return Header(**data)


def decode(path: Path, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs_embeds [n, H], per_layer_inputs [n, L, P]) of `ids` from the row file, as the loader computes them."""
    header = read_header(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")  # only the records asked for are read
    records = raw[header.records_offset:header.records_offset + header.vocab_size * header.record_bytes]
    records = np.asarray(records.reshape(header.vocab_size, header.record_bytes)[ids])
    embeds = _decode_table(records, header.text)
    per_layer = _decode_table(records, header.per_layer)
    if header.hard_start is not None:
        hard = np.asarray(raw[header.hard_offset:]).view("<f4").reshape(header.hard_rows, header.hidden_size)
        is_hard = ids >= header.hard_start
        embeds[is_hard] = hard[ids[is_hard] - header.hard_start]
    return embeds, per_layer.reshape(len(ids), header.layers, header.per_layer_size)


def _decode_table(records: np.ndarray, table: Table) -> np.ndarray:
    codes = records[:, table.codes_at:table.codes_at + table.codes_bytes]
    scale = np.float32(table.scale)
    if table.bits is None:
        return np.ascontiguousarray(codes).view("<f4") * scale
    if table.bits == 4:
        codes = np.stack([codes & 0x0F, codes >> 4], axis=-1).reshape(len(records), -1)
    values = codes.astype(np.float32) - np.float32(OFFSET[table.bits])
    scales = np.ascontiguousarray(records[:, table.scales_at:table.end]).view("<f4")
    blocks = values.reshape(len(records), -1, table.block) * scales[..., None]
    return blocks.reshape(len(records), -1) * scale


def check_rows(path: Path, session) -> float:
    """Largest |difference| between the row file's rows and the session's outputs on a spread of ids (every id of a
    small vocabulary, the hard ids included); raises if above TOLERANCE, since the loader would then compute
    something the session does not."""
    header = read_header(path)
    ids = np.unique(np.concatenate([np.linspace(0, header.vocab_size - 1, min(CHECK_IDS, header.vocab_size))
                                    .astype(np.int64), np.arange(header.hard_start or header.vocab_size,
                                                                 header.vocab_size)]))
    worst = 0.0
    for chunk in np.array_split(ids, max(1, len(ids) // 512)):
        want = _embed(session, chunk)
        got = decode(path, chunk)
        worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True)))
    if worst > TOLERANCE:
        raise AssertionError(f"{path.name} decodes to rows up to {worst:.2e} away from the embed_tokens session")
    return worst


# --- The session a streamed bundle ships in place of embed_tokens ---------------------------------------------------
def stand_in(text_config: Any, dtype: str) -> onnx.ModelProto:
    """A graph with embed_tokens' inputs and outputs whose tables are empty: a runtime loading a streamed bundle
    without MatSlice's loader gets an error naming the row file at the first token, never wrong numbers."""
    named = f"embeddings_are_streamed_from_{rows_name(dtype).replace('.', '_')}_load_with_site_matslice_js"
    hidden, per_layer = text_config.hidden_size, text_config.num_hidden_layers * text_config.hidden_size_per_layer_input
    shape = [text_config.num_hidden_layers, text_config.hidden_size_per_layer_input]
    nodes = [
        helper.make_node("Gather", ["text_rows", "input_ids"], ["inputs_embeds"],
                         name=named),
        helper.make_node("Gather", ["per_layer_rows", "input_ids"], ["flat"], name=f"{named}_per_layer"),
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        helper.make_node("Concat", ["ids_shape", "layer_shape"], ["per_layer_shape"], axis=0),
        helper.make_node("Reshape", ["flat", "per_layer_shape"], ["per_layer_inputs"]),
    ]
    graph = helper.make_graph(
        nodes, "embed_tokens_streamed",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])],
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch_size", "sequence_length", hidden]),
         helper.make_tensor_value_info("per_layer_inputs", TensorProto.FLOAT,
                                       ["batch_size", "sequence_length", *shape])],
        [numpy_helper.from_array(np.zeros((0, hidden), np.float32), "text_rows"),
         numpy_helper.from_array(np.zeros((0, per_layer), np.float32), "per_layer_rows"),
         numpy_helper.from_array(np.array(shape, np.int64), "layer_shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="matslice")
    model.ir_version = 8
    return model

