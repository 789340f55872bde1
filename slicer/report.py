"""What `plan` and `presets` print: the numbers a user decides with, as text or JSON-ready data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gemma3n.config import e4b_config
from gemma3n.errors import UserError
from gemma3n.modalities import TEXT_SESSIONS
from gemma3n.safetensors import TensorInfo, read_tensors
from gemma3n.shapes import checkpoint_shapes, numel, stock_vision_shapes
from gemma3n.units import human_bytes
from slicer.download import side_files
from slicer.footprint import bundle_footprint, runtime_memory, vision_tensors_from
from slicer.plan import DTYPE_BYTES, SlicePlan, count_params, make_plan
from slicer.presets import all_presets


def layer_ranges(indices: Sequence[int], prefix: str = "", sep: str = ",") -> str:
    """[0, 1, 2, 5] -> '0-2,5'; with prefix "L" and sep ", ": 'L0-2, L5'."""
    spans: list[list[int]] = []
    for index in indices:
        if spans and index == spans[-1][1] + 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    return sep.join(f"{prefix}{a}-{b}" if a != b else f"{prefix}{a}" for a, b in spans)


def folder_tensors(folder: Path | None) -> dict[str, TensorInfo] | None:
    """The tensors a checkpoint folder's shard headers list, or None without a folder or readable shards."""
    if folder is None:
        return None
    try:
        return read_tensors(folder) or None
    except UserError:
        return None


def predicted_bytes(plan: SlicePlan, folder: Path | None,
                    tensors: dict[str, TensorInfo] | None = None) -> dict[str, Any]:
    """Bytes of the child's safetensors, exact from the parent's headers when its shards are at hand."""
    if folder is not None:
        tensors = tensors or folder_tensors(folder)
        if tensors:
            from slicer.checkpoint import tensor_map

            cuts = tensor_map(plan, tensors)
            vision = sum(numel(t.shape) for n, t in tensors.items() if n.startswith("model.vision_tower."))
            child_bytes = sum(numel(c.shape(tensors[c.parent])) * tensors[c.parent].itemsize for c in cuts)
            return {"bytes": child_bytes, "bytes_source": "parent safetensors headers",
                    "params": count_params(plan.child, None if plan.text_only_child else vision),
                    "parent_params": count_params(plan.parent, vision)}
    dtype = plan.parent.weight_dtype
    item = DTYPE_BYTES.get(dtype, 2)
    count = sum(numel(s) for s in checkpoint_shapes(plan.child).values())
    count += count_params(plan.child)["vision"] or 0
    return {"bytes": count * item, "bytes_source": f"config shapes at {dtype}"}


def bundle_summary(plan: SlicePlan, tensors: dict[str, TensorInfo] | None, dtypes: tuple[str, ...],
                   options: dict[str, Any], context: int, folder: Path | None = None) -> dict[str, Any]:
    """What `matslice export` would write for the child, and what running it takes, as JSON-ready data: `bundle`
    (bytes per session and dtype, text-only and all-session totals, the largest tensor per dtype; with the
    checkpoint `folder`, the side files and `download`, what a page fetches: sessions plus side files) and `memory`
    (per dtype at `context` tokens). A customised vision tower is known only from the checkpoint's headers."""
    child, notes = plan.child, []
    modalities = plan.modalities
    vision = vision_tensors_from(tensors) if tensors and child.multimodal else None
    stock = child.multimodal and not child.vision.customized and stock_vision_shapes(child.vision.architecture)
    if child.multimodal and not vision and not stock:
        modalities = tuple(m for m in modalities if m != "vision")
        notes.append("vision_encoder left out: its customised tower is known only from the checkpoint's headers "
                     "(pass the checkpoint folder)")
    footprint = bundle_footprint(child, dtypes, modalities=modalities, vision_tensors=vision, **options)
    sessions = {session: {dtype: {"bytes": found.bytes, "data_bytes": found.data_bytes,
                                  "graph_bytes": found.graph_bytes,
                                  "largest_tensor": {"name": found.largest_tensor[0], "bytes": found.largest_tensor[1]},
                                  **({"rows_bytes": found.rows_bytes} if found.rows_bytes else {})}
                          for dtype, found in variants.items()}
                for session, variants in footprint.items()}
    totals = {dtype: {"text": sum(sessions[s][dtype]["bytes"] for s in TEXT_SESSIONS),
                      "all": sum(variants[dtype]["bytes"] for variants in sessions.values())} for dtype in dtypes}
    largest = {dtype: max(({"session": s, **variants[dtype]["largest_tensor"]} for s, variants in sessions.items()),
                          key=lambda r: (r["bytes"], r["session"])) for dtype in dtypes}
    memory = {dtype: runtime_memory(child, dtype, context, **options) for dtype in dtypes}
    side = side_files(plan, folder, {s: {d: found.data_files for d, found in variants.items()}
                                     for s, variants in footprint.items()}, dtypes)
    download = None if side is None else {dtype: {key: total + sum(side.values()) for key, total in by.items()}
                                          for dtype, by in totals.items()}
    return {
        "bundle": {"dtypes": list(dtypes), "options": options, "sessions": sessions, "bytes": totals,
                   "side_files": side, "download": download, "largest_tensor": largest, "notes": notes,
                   "exact": "data_bytes and largest_tensor are exact; graph_bytes (the .onnx graph) is estimated"},
        "memory": {"context": context, "batch": 1, "sessions": list(TEXT_SESSIONS), "dtypes": memory},
    }


def bundle_report(summary: dict[str, Any]) -> list[str]:
    bundle, memory = summary["bundle"], summary["memory"]
    dtypes = bundle["dtypes"]
    head = f"{'':<26}" + "".join(f"{d:>14}" for d in dtypes)
    lines = ["", "bundle (download bytes; the .onnx graphs estimated, the weights exact)", head]
    for session, variants in bundle["sessions"].items():
        lines.append(f"{session:<26}" + "".join(f"{human_bytes(variants[d]['bytes']):>14}" for d in dtypes))
    for key, label in (("text", "text sessions"), ("all", "all sessions")):
        lines.append(f"{label:<26}" + "".join(f"{human_bytes(bundle['bytes'][d][key]):>14}" for d in dtypes))
    if bundle["download"] is not None:
        side = sum(bundle["side_files"].values())
        lines.append(f"{'side files':<26}" + "".join(f"{human_bytes(side):>14}" for _ in dtypes))
        for key, label in (("text", "download, text"), ("all", "download, all")):
            lines.append(f"{label:<26}" + "".join(f"{human_bytes(bundle['download'][d][key]):>14}" for d in dtypes))
    streamed = bundle["sessions"].get(TEXT_SESSIONS[0], {})
    if any("rows_bytes" in streamed.get(d, {}) for d in dtypes):
        lines.append("embed_tokens streamed: its session counts the row file's header and index; the rows, read a "
                     "few KB per token met:")
        lines.append(f"{'row file':<26}" + "".join(f"{human_bytes(streamed[d]['rows_bytes']):>14}" for d in dtypes))
    for dtype in dtypes:
        found = bundle["largest_tensor"][dtype]
        lines.append(f"largest tensor ({dtype}): {found['name']} in {found['session']}, {found['bytes']:,} bytes")
    lines += bundle["notes"]
    lines += ["", f"runtime memory at {memory['context']} tokens, batch 1 (text sessions)", head]
    for key in ("weights", "kv_cache", "activations", "total"):
        lines.append(f"{key:<26}" + "".join(f"{human_bytes(memory['dtypes'][d][key]):>14}" for d in dtypes))
    return lines


def plan_report(summary: dict[str, Any]) -> str:
    params, parent = summary["params"], summary["parent_params"]
    text = summary["text_config"]
    lines = [
        f"preset: {summary['preset'] or 'custom'}   model_type: {summary['model_type']}   "
        f"modalities: {', '.join(summary['modalities'])}",
        f"layers: {text['num_hidden_layers']} kept {summary['kept_layers']}",
        f"skipped: {summary['skipped_layers'] or 'none'}",
        f"num_kv_shared_layers: {text['num_kv_shared_layers']}",
        f"ffn widths: {text['intermediate_size']}",
    ]
    if summary["audio_config"]:
        audio = summary["audio_config"]
        lines.append(f"audio: {audio['conf_num_hidden_layers']} conformer blocks {audio['kept_blocks']}, "
                     f"ffn width {audio['ffn_dim']} of {audio['ffn_dim_parent']}")
    if summary.get("vocab"):
        vocab = summary["vocab"]
        corpus = ", ".join(c["name"] for c in vocab["corpus"])
        lines.append(f"vocabulary: {vocab['kept_text_ids']:,} of {vocab['parent_text_ids']:,} text tokens, "
                     f"from {corpus} ({vocab['covered_token_fraction']:.1%} of its tokens kept)")
    lines.append("")
    lines.append(f"{'parameters':<22}{'parent':>16}{'child':>16}")
    for key in ("effective_published", "effective", "text", "per_layer_embeddings", "audio", "vision", "total"):
        shown = [f"{v:>16,}" if v is not None else f"{'unknown':>16}" for v in (parent[key], params[key])]
        lines.append(f"{key:<22}{''.join(shown)}")
    lines.append(f"{'checkpoint bytes':<22}{'':>16}{summary['bytes']:>16,}  ({summary['bytes_source']})")
    if "bundle" in summary:
        lines += bundle_report(summary)
    return "\n".join(lines)


def presets_table() -> list[dict[str, Any]]:
    """Every preset with its numbers computed on the E4B config, and the published ones beside them."""
    rows = []
    for preset in all_presets():
        plan = make_plan(e4b_config(), preset.spec())
        params = plan.summary()["params"]
        computed = params["effective_published"] / 1e9
        row: dict[str, Any] = {
            "name": preset.name,
            "description": preset.description,
            "official": preset.official,
            "layers": len(plan.kept_layers),
            "layers_to_skip": list(preset.layers_to_skip),
            "ffn_dims": list(plan.ffn_dims),
            "modalities": list(plan.modalities),
            "effective_params_b": round(computed, 3),
            "effective_params": params["effective_published"],
            "effective_params_transformers": params["effective"],
            "text_params": params["text"],
            "total_params": params["total"],
            "published_effective_params_b": preset.published_effective_b,
            "published_mmlu": preset.published_mmlu,
        }
        if preset.official:
            row["reproduced"] = round(computed, 2) == preset.published_effective_b
            row["note"] = _official_note(preset.name, computed, preset.published_effective_b)
        rows.append(row)
    return rows


def _official_note(name: str, computed: float, published: float) -> str:
    if round(computed, 2) == published:
        return "reproduced to the table's two decimals"
    note = (f"computed {computed:.3f}B, published {published:.2f}B ({published - computed:+.3f}B, beyond the table's "
            f"rounding): rows with the same widths agree with each other, but each 16384 -> 8192 narrowing costs "
            f"50,331,648 parameters and the table's 35-layer mixed-width rows are offset from its own E4B row by "
            f"0.005-0.019B more than their widths explain; our count is the exact sum of the child's tensors")
    if name == "E3.79B-block":
        note += "; this row's label also says 3.79B while its count column says 3.74B"
    return note


def presets_report(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'name':<14}{'layers':>7}{'effective (B)':>15}{'published (B)':>15}{'MMLU':>8}  note"]
    for row in rows:
        published = "" if row["published_effective_params_b"] is None else f"{row['published_effective_params_b']:.2f}"
        note = "" if not row["official"] else ("reproduced" if row["reproduced"] else "see --json: table inconsistent")
        if not row["official"]:
            note = row["description"]
        lines.append(f"{row['name']:<14}{row['layers']:>7}{row['effective_params_b']:>15.3f}{published:>15}"
                     f"{row['published_mmlu'] or '':>8}  {note}")
    lines.append("effective = Google's convention (text decoder without embedding tables, with the k/v projections "
                 "of KV-shared layers), on the E4B config")
    return "\n".join(lines)
