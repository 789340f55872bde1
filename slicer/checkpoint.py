"""Applying a slice plan to a checkpoint folder, one tensor (and one chunk) at a time.

`tensor_map` says, for every tensor of the child, which parent tensor it comes from and how it is cut;
`slice_checkpoint` streams those cuts into new shards inside a temporary folder and renames it into
place only when everything, config and tokenizer files included, is written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from gemma3n.errors import UserError
from gemma3n.folders import atomic_folder, copy_side_files
from gemma3n.safetensors import OutTensor, ShardWriter, TensorInfo, read_float, read_rows, read_tensors
from gemma3n.shapes import checkpoint_shapes
from slicer import audio as audio_units
from slicer.card import model_card
from slicer.plan import SlicePlan
from slicer.vocab import REWRITTEN_FILES, VocabCut, rewrite_file, vocab_map_json

CutKind = Literal["copy", "rows", "cols", "row_blocks", "col_blocks", "unit_rows", "unit_cols"]
DROPPED_FOR_TEXT = ("model.audio_tower.", "model.vision_tower.", "model.embed_audio.", "model.embed_vision.")


@dataclass(frozen=True)
class Cut:
    """How one child tensor is made from one parent tensor (2-D cuts keep leading rows/columns, or whole blocks
    of them; a vocabulary cut keeps `row_ids`, the embedding rows of the kept tokens, in order)."""

    child: str
    parent: str
    kind: CutKind = "copy"
    keep: int = 0  # rows, columns or live units kept
    blocks: tuple[int, ...] = ()  # row/column blocks kept, each `block` wide
    block: int = 0
    order: tuple[int, ...] = field(default=(), repr=False)  # unit permutation for audio FFN cuts
    row_ids: tuple[int, ...] = field(default=(), repr=False)  # with "copy"/"cols"/"col_blocks": only these rows

    def shape(self, info: TensorInfo) -> tuple[int, ...]:
        rows, *rest = info.shape
        rows = len(self.row_ids) if self.row_ids else rows
        if self.kind == "rows":
            return (self.keep, *rest)
        if self.kind == "cols":
            return (rows, self.keep)
        if self.kind == "row_blocks":
            return (len(self.blocks) * self.block, *rest)
        if self.kind == "col_blocks":
            return (rows, len(self.blocks) * self.block)
        return (rows, *rest)


_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_BLOCK = re.compile(r"^conformer\.(\d+)\.(.+)$")
_AUDIO_FFN = re.compile(r"^(ffw_layer_(?:start|end))\.ffw_layer_([12])\.weight$")


def check_parent(plan: SlicePlan, tensors: dict[str, TensorInfo]) -> None:
    """Every tensor the parent's config implies must be present with its shape (extra ones are fine)."""
    for name, shape in checkpoint_shapes(plan.parent).items():
        if name not in tensors:
            raise UserError(f"the parent checkpoint has no tensor {name}: its shards are incomplete, download again")
        if tensors[name].shape != shape:
            raise UserError(
                f"{name} has shape {list(tensors[name].shape)} but config.json implies {list(shape)}: "
                f"the config does not belong to these weights"
            )


def _text_cut(plan: SlicePlan, rest: str, parent: str, child_prefix: str) -> Cut | None:
    per_layer = plan.parent.text.hidden_size_per_layer_input
    vocab = plan.vocab
    if rest == "embed_tokens_per_layer.weight":
        return Cut(child_prefix + rest, parent, "col_blocks", blocks=plan.kept_layers, block=per_layer,
                   row_ids=vocab.text_ids if vocab else ())
    if rest == "embed_tokens.weight" and vocab is not None:
        return Cut(child_prefix + rest, parent, row_ids=vocab.parent_ids)
    if rest == "per_layer_model_projection.weight":
        return Cut(child_prefix + rest, parent, "row_blocks", blocks=plan.kept_layers, block=per_layer)
    match = _LAYER.match(rest)
    if not match:
        return Cut(child_prefix + rest, parent)
    layer, name = int(match.group(1)), match.group(2)
    if layer not in plan.kept_layers:
        return None
    position = plan.kept_layers.index(layer)
    if plan.child.text.kv_roles[position] == "reuse" and re.match(r"self_attn\.(k_proj|v_proj|k_norm)\.", name):
        return None  # Google's checkpoints carry these for KV-shared layers; transformers >= 5 has none
    child = f"{child_prefix}layers.{position}.{name}"
    width = plan.ffn_dims[position]
    if name in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
        return Cut(child, parent, "rows", keep=width)
    if name == "mlp.down_proj.weight":
        return Cut(child, parent, "cols", keep=width)
    return Cut(child, parent)


def _audio_cut(plan: SlicePlan, rest: str, parent: str, orders: dict[str, np.ndarray] | None) -> Cut | None:
    match = _BLOCK.match(rest)
    if not match:
        return Cut(parent, parent)
    block, name = int(match.group(1)), match.group(2)
    if block not in (plan.kept_audio_blocks or ()):
        return None
    child = f"model.audio_tower.conformer.{plan.kept_audio_blocks.index(block)}.{name}"
    ffn = _AUDIO_FFN.match(name)
    if plan.audio_ffn_dim is None or not ffn:
        return Cut(child, parent)
    order = () if orders is None else tuple(int(u) for u in orders[f"conformer.{block}.{ffn.group(1)}"])
    kind: CutKind = "unit_rows" if ffn.group(2) == "1" else "unit_cols"
    return Cut(child, parent, kind, keep=plan.audio_ffn_dim, order=order)


def audio_unit_orders(plan: SlicePlan, tensors: dict[str, TensorInfo]) -> dict[str, np.ndarray]:
    """For each kept conformer feed-forward module, its unit permutation (see slicer/audio.py)."""
    if plan.audio_ffn_dim is None:
        return {}
    orders = {}
    for block in plan.kept_audio_blocks or ():
        for module in ("ffw_layer_start", "ffw_layer_end"):
            key = f"conformer.{block}.{module}"
            w1, w2 = (read_float(tensors[f"model.audio_tower.{key}.ffw_layer_{k}.weight"]) for k in (1, 2))
            orders[key] = audio_units.unit_order(w1, w2, plan.audio_ffn_dim)
    return orders


def tensor_map(plan: SlicePlan, tensors: dict[str, TensorInfo],
               orders: dict[str, np.ndarray] | None = None) -> list[Cut]:
    """The child's tensors, each as a cut of one parent tensor, in the parent's on-disk order.

    Audio FFN cuts need `orders` (from `audio_unit_orders`, which reads weights) only to be written;
    without them the map still gives every child tensor's name and shape.
    """
    parent_text = plan.parent.text_prefix
    child_text = plan.child.text_prefix
    cuts = []
    for name in sorted(tensors, key=lambda n: (str(tensors[n].file), tensors[n].start)):
        if name.startswith(parent_text):
            cut = _text_cut(plan, name[len(parent_text):], name, child_text)
        elif plan.text_only_child and name.startswith(DROPPED_FOR_TEXT):
            cut = None
        elif name.startswith("model.audio_tower."):
            cut = _audio_cut(plan, name[len("model.audio_tower."):], name, orders)
        elif name == "lm_head.weight" and plan.vocab is not None:
            cut = Cut(name, name, row_ids=plan.vocab.parent_ids)  # an untied head has the embedding's rows
        else:
            cut = Cut(name, name)  # vision tower, multimodal embedders, an untied lm_head
        if cut is not None:
            cuts.append(cut)
    return cuts


def _stream(cut: Cut, info: TensorInfo, f, writer: ShardWriter, bar: tqdm) -> None:
    """Write one cut. Byte runs are copied inside the kernel; only audio FFN tensors (MBs) pass through memory."""
    item = info.itemsize
    if cut.kind in ("unit_rows", "unit_cols"):
        raw = read_rows(f, info, 0, info.shape[0])
        units = np.asarray(cut.order)
        if cut.kind == "unit_rows":  # ffw_layer_1: [4H, H], one unit per row
            out = raw[units].copy()
            out[cut.keep:] = 0
        else:  # ffw_layer_2: [H, 4H], one unit per column
            cells = raw.reshape(info.shape[0], info.shape[1], item)[:, units].copy()
            cells[:, cut.keep:] = 0
            out = cells
        writer.write(out)
        bar.update(info.nbytes)
        return
    row_bytes = info.nbytes // (info.shape or (1,))[0]
    for offset, nbytes in _byte_runs(cut, info, row_bytes):  # copied inside the kernel, like `cp`
        writer.copy_range(f, info.start + offset, nbytes)
    bar.update(info.nbytes)


def _byte_runs(cut: Cut, info: TensorInfo, row_bytes: int) -> list[tuple[int, int]]:
    """The (offset, length) byte runs of the parent tensor that make up the child, in order."""
    if cut.kind == "copy" and not cut.row_ids:
        return [(0, info.nbytes)]
    if cut.kind == "rows":
        return [(0, cut.keep * row_bytes)]
    if cut.kind == "row_blocks":
        return _merge([(b * cut.block * row_bytes, cut.block * row_bytes) for b in cut.blocks])
    if cut.kind == "copy":
        within = [(0, row_bytes)]
    elif cut.kind == "cols":
        within = [(0, cut.keep * info.itemsize)]
    else:  # col_blocks
        width = cut.block * info.itemsize
        within = _merge([(b * width, width) for b in cut.blocks])
    rows = cut.row_ids or range(info.shape[0])
    return _merge([(row * row_bytes + start, length) for row in rows for start, length in within])


def _merge(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, length in runs:
        if merged and merged[-1][0] + merged[-1][1] == start:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((start, length))
    return merged


def slice_checkpoint(parent: Path, out: Path, plan: SlicePlan, *, overwrite: bool = False,
                     max_shard_bytes: int = 4 << 30, progress: bool = True) -> Path:
    """Write the child checkpoint of `plan` to `out`; it appears whole or not at all (gemma3n.folders)."""
    tensors = read_tensors(parent)
    check_parent(plan, tensors)
    cuts = tensor_map(plan, tensors, audio_unit_orders(plan, tensors))
    outs = [OutTensor(c.child, tensors[c.parent].dtype, c.shape(tensors[c.parent])) for c in cuts]
    with atomic_folder(out, overwrite=overwrite) as work:
        writer = ShardWriter(work, outs, max_shard_bytes)
        total = sum(tensors[c.parent].nbytes for c in cuts)
        handles: dict[Path, object] = {}
        with tqdm(total=total, unit="B", unit_scale=True, desc="slicing", disable=not progress) as bar:
            try:
                for cut in cuts:
                    info = tensors[cut.parent]
                    handle = handles.get(info.file) or handles.setdefault(info.file, info.file.open("rb"))
                    writer.begin(cut.child)
                    _stream(cut, info, handle, writer, bar)
                writer.close()
            finally:
                for handle in handles.values():
                    handle.close()
        (work / "config.json").write_text(json.dumps(plan.child.to_json(), indent=2, sort_keys=True) + "\n")
        copy_side_files(parent, work, text_only=plan.text_only_child)
        if plan.vocab is not None:
            write_vocab_files(work, plan.vocab)
        (work / "README.md").write_text(model_card(plan, parent, outs))
    return out


def write_vocab_files(folder: Path, cut: VocabCut) -> None:
    """Rewrite the copied tokenizer and generation files for the child's ids, and write vocab_map.json."""
    for path in (folder / name for name in REWRITTEN_FILES):
        if path.is_file():
            path.write_text(rewrite_file(path.name, path.read_text(), cut))
    (folder / "vocab_map.json").write_text(vocab_map_json(cut))
