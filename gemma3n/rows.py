"""The layout of a streamed-embeddings row file, as arithmetic: where each token's record, each integrity block and the
index lie, and how many bytes the file takes. web_export/rows.py writes and reads files in this layout; `matslice
plan` predicts a streamed bundle from it without writing one, and site/matslice.js reads the same header.

Layout (little-endian), built so that reading one record verifies at most one block of at most 64 KiB:
* ``MAGIC``, a uint32 length and the JSON header (`Header`), padded to the alignment;
* the index: the SHA-256 of every block, in block order; the header's ``id`` is the SHA-256 of the index, and
  manifest.json names the same id, so a row file from another variant is refused by its header;
* the records, ``records_per_block`` to a block: the record of id i is the text row i (codes, then scales) and the
  per-layer row i (row 0 for ids at or above the per-layer vocabulary, as the embed_tokens session masks them);
* multimodal only: the hard rows, float32 inputs_embeds of the vision and audio ids (``hard_start`` to the end of
  the vocabulary), ``hard_per_block`` to a block.
A value decodes as ``(code - offset) * scale * embed_scale``, each product rounded to float32 (float32 tables:
``value * embed_scale``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, replace
from typing import Any

from gemma3n.dtypes import DTYPES
from gemma3n.errors import UserError
from gemma3n.layout import aligned

MAGIC = b"MSROWS\x00\x01"
BLOCK_LIMIT = 64 << 10  # bytes one integrity block holds at most (unless one record alone is larger)
EMBEDDINGS = ("bundled", "streamed")
SUFFIX = ".rows"
HEADER_SLACK = 128  # bytes the real scales' and offsets' digits may add to the header (at most about 80)
STAND_IN_BYTES = 720  # the stand-in embed_tokens graph (web_export/rows.stand_in), about: its names vary by dtype


@dataclass(frozen=True)
class Table:
    """How one table's rows are stored in a record: `bits` (4, 8; None for float32), the columns a scale covers,
    the session's embed scale, and the record's byte offsets of its codes (or floats) and scales."""

    columns: int
    bits: int | None
    block: int
    scale: float
    codes_at: int
    scales_at: int

    @property
    def codes_bytes(self) -> int:
        return self.columns * 4 if self.bits is None else self.columns * self.bits // 8

    @property
    def scales_bytes(self) -> int:
        return 0 if self.bits is None else self.columns // self.block * 4

    @property
    def end(self) -> int:
        return self.scales_at + self.scales_bytes


def table_layout(columns: int, bits: int | None, block: int, scale: float, at: int) -> Table:
    """A table's place in a record starting at byte `at`: its codes (or floats), then its scales."""
    codes = Table(columns, bits, block if bits else columns, scale, at, at)
    return replace(codes, scales_at=at + codes.codes_bytes)


@dataclass(frozen=True)
class Header:
    """What a reader needs to find and decode a record; written as JSON at the start of the row file."""

    id: str
    dtype: str
    vocab_size: int
    per_layer_vocab: int
    hidden_size: int
    layers: int
    per_layer_size: int
    text: Table
    per_layer: Table
    record_bytes: int
    records_per_block: int
    records_offset: int
    hard_start: int | None  # first id whose inputs_embeds row is a hard row (vision, audio); None: text-only
    hard_per_block: int
    hard_offset: int
    index_offset: int
    blocks: int
    format: str = "matslice-rows"
    version: int = 1

    @property
    def record_blocks(self) -> int:
        return -(-self.vocab_size // self.records_per_block)

    @property
    def hard_rows(self) -> int:
        return 0 if self.hard_start is None else self.vocab_size - self.hard_start

    @property
    def index_end(self) -> int:
        """Bytes a reader fetches first: the header and the index."""
        return self.index_offset + 32 * self.blocks

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_streamable(dtype: str) -> None:
    """Row files hold float32 arithmetic: the float16 dtypes' sessions compute their embeddings in float16."""
    if DTYPES[dtype].float_bytes != 4:
        raise UserError(f"--embeddings streamed supports q4, q8 and fp32 bundles, not {dtype} (its embeddings are "
                        f"float16): drop {dtype} or use --embeddings bundled")


def layout(dtype: str, vocab_size: int, per_layer_vocab: int, hidden_size: int, layers: int, per_layer_size: int,
           hard_start: int | None, *, block_size: int = 32, text_scale: float = 1.0, per_layer_scale: float = 1.0,
           id: str = "0" * 64) -> Header:
    """The row file's layout for these shapes: pure arithmetic, so `matslice plan` predicts the file's bytes."""
    check_streamable(dtype)
    bits = DTYPES[dtype].lookup_bits
    block = (block_size if bits == 4 else 32) if bits else 0
    text = table_layout(hidden_size, bits, block, text_scale, 0)
    per_layer = table_layout(layers * per_layer_size, bits, block, per_layer_scale, text.end)
    record = per_layer.end
    per_block = max(1, BLOCK_LIMIT // record)
    hard_per_block = max(1, BLOCK_LIMIT // (hidden_size * 4))
    record_blocks = -(-vocab_size // per_block)
    hard_rows = 0 if hard_start is None else vocab_size - hard_start
    blocks = record_blocks + -(-hard_rows // hard_per_block)
    header = Header(id, dtype, vocab_size, per_layer_vocab, hidden_size, layers, per_layer_size, text, per_layer,
                    record, per_block, 0, hard_start, hard_per_block, 0, 0, blocks)
    # The header's slot depends on the shapes alone (so a plan, which knows no scales, predicts it): its length
    # with unit scales and zero offsets, plus room for the digits of the real ones.
    plain = replace(header, text=replace(text, scale=1.0), per_layer=replace(per_layer, scale=1.0))
    index_offset = aligned(len(header_bytes(plain)) + HEADER_SLACK)
    records_offset = aligned(index_offset + 32 * blocks)
    hard_offset = aligned(records_offset + vocab_size * record)
    return replace(header, index_offset=index_offset, records_offset=records_offset, hard_offset=hard_offset)


def file_bytes(header: Header) -> int:
    return header.hard_offset + header.hard_rows * header.hidden_size * 4


def header_bytes(header: Header) -> bytes:
    text = json.dumps(header.to_json(), sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(text)) + text


def rows_name(dtype: str) -> str:
    return f"embed_tokens{DTYPES[dtype].suffix}{SUFFIX}"
