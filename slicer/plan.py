"""A slice plan: which layers and units a child keeps, its config, and what it costs. Pure data.

Computing, validating and counting a plan reads only config.json, so `matslice plan` answers at once
for a 16 GB model. The rules it enforces are the ones that make a slice exact (see
`../shared/reference/gemma3n-facts.md`): a layer that a kept layer reads its KV cache from is never
dropped, `num_kv_shared_layers` shrinks by exactly the number of dropped KV-sharing layers, and every
per-layer list in the config is re-derived for the kept layers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from slicer.config import audio_config, is_multimodal, kv_roles, store_of, text_config
from slicer.errors import SliceError
from slicer.shapes import VISION_PARAMS, checkpoint_shapes, numel, shared_kv_params, text_prefix

MODALITIES = ("text", "audio", "vision")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "F32": 4, "F16": 2, "BF16": 2}


@dataclass(frozen=True)
class SliceSpec:
    """What the user asked for, before validation. Empty fields keep the parent's choice."""

    layers_to_skip: tuple[int, ...] = ()
    ffn_dims: tuple[int, ...] = ()
    audio_layers_to_skip: tuple[int, ...] = ()
    audio_ffn_dim: int | None = None
    modalities: tuple[str, ...] = ()
    preset: str | None = None


@dataclass(frozen=True)
class SlicePlan:
    """A validated slice of one parent config: what is kept, and the child's config."""

    parent: dict[str, Any]
    kept_layers: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    kept_audio_blocks: tuple[int, ...] | None
    audio_ffn_dim: int | None
    modalities: tuple[str, ...]
    preset: str | None = None
    child: dict[str, Any] = field(default_factory=dict)

    @property
    def text_only_child(self) -> bool:
        return self.modalities == ("text",)

    def summary(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what `matslice plan --json` prints)."""
        text = text_config(self.child)
        audio = audio_config(self.child)
        return {
            "preset": self.preset,
            "model_type": self.child["model_type"],
            "modalities": list(self.modalities),
            "kept_layers": list(self.kept_layers),
            "skipped_layers": [i for i in range(_layer_count(self.parent)) if i not in self.kept_layers],
            "text_config": {key: text[key] for key in (
                "num_hidden_layers", "intermediate_size", "layer_types", "num_kv_shared_layers",
                "activation_sparsity_pattern")},
            "kv_roles": kv_roles(text["layer_types"], text["num_kv_shared_layers"]),
            "audio_config": None if audio is None else {
                "conf_num_hidden_layers": audio["conf_num_hidden_layers"],
                "kept_blocks": list(self.kept_audio_blocks or ()),
                "ffn_dim": self.audio_ffn_dim or 4 * audio["hidden_size"],
                "ffn_dim_parent": 4 * audio["hidden_size"],
            },
            "params": count_params(self.child),
            "parent_params": count_params(self.parent),
        }


def _layer_count(config: dict[str, Any]) -> int:
    return int(text_config(config)["num_hidden_layers"])


def _check_indices(name: str, option: str, indices: tuple[int, ...], count: int) -> None:
    seen: set[int] = set()
    for index in indices:
        if not 0 <= index < count:
            raise SliceError(f"{option} has index {index}, but the {name} has indices 0..{count - 1}: remove it")
        if index in seen:
            raise SliceError(f"{option} lists index {index} twice: give each index once")
        seen.add(index)
    if len(seen) == count:
        raise SliceError(f"{option} skips all {count} {name} indices: keep at least one")


def _ffn_dims(spec: SliceSpec, text: dict[str, Any], kept: tuple[int, ...]) -> tuple[int, ...]:
    parent = [text["intermediate_size"][i] for i in kept]
    if not spec.ffn_dims:
        return tuple(parent)
    dims = spec.ffn_dims * len(kept) if len(spec.ffn_dims) == 1 else spec.ffn_dims
    if len(dims) != len(kept):
        raise SliceError(
            f"--ffn-dims has {len(spec.ffn_dims)} widths for {len(kept)} kept layers: "
            f"give one width per kept layer, or a single width for all"
        )
    for position, (width, limit) in enumerate(zip(dims, parent, strict=True)):
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
            raise SliceError(f"--ffn-dims entry {position} is {width!r}: widths are whole numbers above 0")
        if width > limit:
            raise SliceError(
                f"--ffn-dims entry {position} ({width}) is wider than parent layer {kept[position]} ({limit}): "
                f"a slice can only narrow a layer"
            )
    return tuple(dims)


def _check_kv_sharing(text: dict[str, Any], kept: tuple[int, ...]) -> int:
    """Return the child's num_kv_shared_layers, refusing any slice that breaks KV sharing."""
    types, shared = text["layer_types"], text["num_kv_shared_layers"]
    first_shared = len(types) - shared
    for layer in kept:
        store = store_of(layer, types, shared)
        if store is not None and store not in kept:
            raise SliceError(
                f"layer {store} stores the KV cache that kept layer {layer} reuses, so it cannot be skipped: "
                f"keep layer {store}, or also skip every layer from {first_shared} on that reads it"
            )
    child_shared = shared - sum(1 for i in range(first_shared, len(types)) if i not in kept)
    child_types = [types[i] for i in kept]
    for position, layer in enumerate(kept):  # defence in depth: the child must map as the parent did
        store = store_of(position, child_types, child_shared)
        parent_store = store_of(layer, types, shared)
        if (None if store is None else kept[store]) != parent_store:
            raise SliceError(f"slicing would make layer {layer} read the wrong KV cache: keep its store layer")
    return child_shared


def _modalities(spec: SliceSpec, config: dict[str, Any]) -> tuple[str, ...]:
    present = MODALITIES if is_multimodal(config) else ("text",)
    if not spec.modalities:
        return present
    unknown = [m for m in spec.modalities if m not in MODALITIES]
    if unknown:
        raise SliceError(f"unknown modality {unknown[0]!r}: choose from {', '.join(MODALITIES)}")
    missing = [m for m in spec.modalities if m not in present]
    if missing:
        raise SliceError(f"the checkpoint has no {missing[0]} tower: choose from {', '.join(present)}")
    wanted = tuple(m for m in MODALITIES if m in spec.modalities)
    if "text" not in wanted:
        raise SliceError("--modalities must include text: every Gemma 3n variant decodes text")
    if wanted not in (("text",), present):
        raise SliceError(
            f"--modalities {','.join(wanted)}: stock transformers has no Gemma 3n class without a vision tower; "
            f"slice with --modalities text or keep all, then drop a session at export "
            f"(matslice export --modalities {','.join(wanted)})"
        )
    return wanted


def make_plan(config: dict[str, Any], spec: SliceSpec) -> SlicePlan:
    """Validate `spec` against the parent `config` and derive the child's config."""
    text = text_config(config)
    layers = int(text["num_hidden_layers"])
    _check_indices("parent's layers", "--layers-to-skip", spec.layers_to_skip, layers)
    kept = tuple(i for i in range(layers) if i not in spec.layers_to_skip)
    dims = _ffn_dims(spec, text, kept)
    child_shared = _check_kv_sharing(text, kept)
    modalities = _modalities(spec, config)
    audio = audio_config(config) if "audio" in modalities else None
    if audio is None and (spec.audio_layers_to_skip or spec.audio_ffn_dim is not None):
        raise SliceError("audio options need a checkpoint with an audio tower and audio kept in --modalities")
    kept_blocks = None
    if audio is not None:
        blocks = int(audio["conf_num_hidden_layers"])
        _check_indices("audio encoder's blocks", "--audio-layers-to-skip", spec.audio_layers_to_skip, blocks)
        kept_blocks = tuple(j for j in range(blocks) if j not in spec.audio_layers_to_skip)
        width = 4 * int(audio["hidden_size"])
        if spec.audio_ffn_dim is not None and not 0 < spec.audio_ffn_dim <= width:
            raise SliceError(f"--audio-ffn-dim {spec.audio_ffn_dim} is outside 1..{width}, the parent's audio FFN")

    child_text = copy.deepcopy(text)
    child_text |= {
        "num_hidden_layers": len(kept),
        "intermediate_size": list(dims),
        "layer_types": [text["layer_types"][i] for i in kept],
        "activation_sparsity_pattern": [float(text["activation_sparsity_pattern"][i]) for i in kept],
        "num_kv_shared_layers": child_shared,
    }
    audio_ffn = spec.audio_ffn_dim if audio is not None and spec.audio_ffn_dim != 4 * audio["hidden_size"] else None
    record = {
        "kept_layers": list(kept),
        "ffn_dims": list(dims),
        "modalities": list(modalities),
        "preset": spec.preset,
    }
    if modalities == ("text",):
        child = child_text | {"model_type": "gemma3n_text", "architectures": ["Gemma3nForCausalLM"]}
        for key in ("dtype", "torch_dtype"):
            if key in config and key not in child:
                child[key] = config[key]
    else:
        child = copy.deepcopy(config)
        child["text_config"] = child_text
        if audio is not None:
            child["audio_config"] = {**config.get("audio_config", {}), "conf_num_hidden_layers": len(kept_blocks)}
            record["audio"] = {
                "kept_blocks": list(kept_blocks),
                # Units past ffn_dim in every conformer feed-forward are zero (see slicer/audio.py).
                "ffn_dim": audio_ffn or 4 * audio["hidden_size"],
            }
    child["matslice"] = record
    return SlicePlan(config, kept, dims, kept_blocks, audio_ffn, modalities, spec.preset, child)


def count_params(config: dict[str, Any], vision_params: int | None = None) -> dict[str, Any]:
    """Parameter counts of a checkpoint described by `config`, under both conventions.

    `effective` is what transformers >= 5 instantiates for the text decoder without `embed_tokens`
    and `embed_tokens_per_layer`; `effective_published` adds the k/v projections that Google's
    tables still count for KV-shared layers. Audio FFN units zeroed by a slice are not counted.
    """
    shapes = checkpoint_shapes(config)
    text = text_config(config)
    prefix = text_prefix(config)
    text_total = sum(numel(s) for n, s in shapes.items() if n.startswith(prefix))
    embeddings = numel(shapes[prefix + "embed_tokens.weight"]) + numel(shapes[prefix + "embed_tokens_per_layer.weight"])
    audio = sum(numel(s) for n, s in shapes.items() if n.startswith("model.audio_tower."))
    audio_cfg = audio_config(config)
    live = (config.get("matslice") or {}).get("audio", {}).get("ffn_dim")
    if audio_cfg is not None and live:  # zeroed units are carried for stock loading, not computed with
        hidden = audio_cfg["hidden_size"]
        audio -= 4 * audio_cfg["conf_num_hidden_layers"] * hidden * (4 * hidden - live)
    embedders = sum(numel(s) for n, s in shapes.items() if n.startswith(("model.embed_audio.", "model.embed_vision.")))
    vision = 0
    if is_multimodal(config) and vision_params is not None:
        vision = vision_params
    elif is_multimodal(config) and not config.get("vision_config", {}).get("model_args"):
        vision = VISION_PARAMS.get(config.get("vision_config", {}).get("architecture", "mobilenetv5_300m_enc"), 0)
    elif is_multimodal(config):
        vision = None  # a customised timm tower: counted only from the checkpoint's own headers
    effective = text_total - embeddings
    return {
        "total": text_total + audio + embedders + (vision or 0),
        "text": text_total,
        "effective": effective,
        "effective_published": effective + shared_kv_params(text),
        "embeddings": embeddings,
        "per_layer_embeddings": numel(shapes[prefix + "embed_tokens_per_layer.weight"]),
        "audio": audio,
        "vision": vision,
        "multimodal_embedders": embedders,
    }
