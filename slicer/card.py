"""The model card written into every sliced checkpoint: what was cut, from what, and what it costs."""

from __future__ import annotations

import json
from pathlib import Path

from gemma3n.safetensors import OutTensor
from slicer.audio import CRITERION
from slicer.plan import SlicePlan


def model_card(plan: SlicePlan, parent: Path, tensors: list[OutTensor]) -> str:
    summary = plan.summary()
    params, before = summary["params"], summary["parent_params"]
    skipped = summary["skipped_layers"]
    lines = [
        "---",
        "library_name: transformers",
        "tags: [gemma3n, matformer, matslice]",
        "---",
        f"# {plan.preset or 'Custom'} slice of {parent.name}",
        "",
        "Made with MatSlice (MatFormer Mix-n-Match). The child computes exactly what the parent computes with",
        "the listed layers and FFN units removed; it loads in stock transformers.",
        "",
        "## What was cut",
        f"- Decoder layers: kept {len(plan.kept_layers)} of {len(plan.kept_layers) + len(skipped)}; "
        f"skipped {skipped or 'none'}.",
        f"- FFN widths of the kept layers: {list(plan.ffn_dims)}.",
        f"- KV sharing: num_kv_shared_layers {summary['text_config']['num_kv_shared_layers']}, "
        f"store layers kept.",
        f"- Modalities: {', '.join(plan.modalities)}.",
    ]
    audio = summary["audio_config"]
    if audio:
        lines.append(f"- Audio encoder: kept conformer blocks {audio['kept_blocks']}; feed-forward width "
                     f"{audio['ffn_dim']} of {audio['ffn_dim_parent']}.")
        if plan.audio_ffn_dim is not None:
            lines.append(f"  Units kept by {CRITERION}. Transformers fixes the width, so kept units come first "
                         f"and the others are zero; `matslice.audio.ffn_dim` in config.json records the live width.")
    lines += [
        "",
        "## Numbers",
        "| | parent | child |",
        "|---|---:|---:|",
    ]
    for key in ("effective_published", "effective", "text", "total"):
        lines.append(f"| {key} parameters | {before[key]:,} | {params[key]:,} |")
    lines.append(f"| checkpoint bytes | | {sum(t.nbytes for t in tensors):,} |")
    lines += ["", "`effective` counts what transformers >= 5 builds for the text decoder without its embedding",
              "tables; `effective_published` adds the k/v projections Google's tables count for KV-shared layers.",
              "", "## Slice", "```json", json.dumps(plan.record, indent=2), "```", ""]
    return "\n".join(lines)
