"""A slice plan: which layers and units a child keeps, its config, and what it costs. Pure data.

Computing, validating and counting a plan reads only config.json, so `matslice plan` answers at once
for a 16 GB model. The rules it enforces are the ones that make a slice exact: a layer that a kept layer
reads its KV cache from is never dropped (the child would load and silently read the wrong cache),
`num_kv_shared_layers` shrinks by exactly the number of dropped KV-sharing layers (too little turns an
old store layer into a reuse layer whose k/v weights are ignored; too much makes a reuse layer a producer
with missing k/v weights), and every per-layer list in the config is re-derived for the kept layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from gemma3n.config import TEXT_ONLY_CLASS, AudioConfig, ModelConfig, TextConfig
from gemma3n.errors import UserError
from gemma3n.modalities import parse_modalities
from gemma3n.shapes import VISION_PARAMS, checkpoint_shapes, numel, shared_kv_params
from slicer.vocab import VocabCut, remap_config
from slicer.vocab import summary as vocab_summary

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
    vocab_corpus: tuple[str, ...] = ()  # text files or folders of .txt files (slicer/vocab.py)
    vocab_size: int | None = None
    vocab_keep_unused: bool = True  # keep Gemma's <unusedN> placeholder tokens even when the corpus never uses them

    @property
    def cuts_vocab(self) -> bool:
        return bool(self.vocab_corpus) or self.vocab_size is not None

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON data, tuples as lists, in field order; `preset` (a label, not a cut) only when set."""
        data = {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}
        if self.preset is None:
            del data["preset"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SliceSpec:
        """The spec `to_json` wrote; other keys are ignored (a search front entry carries its numbers beside it)."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()
                      if key in names})


@dataclass(frozen=True)
class SlicePlan:
    """A validated slice of one parent: what is kept, and the child's config."""

    parent: ModelConfig
    child: ModelConfig
    kept_layers: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    kept_audio_blocks: tuple[int, ...] | None
    audio_ffn_dim: int | None
    modalities: tuple[str, ...]
    preset: str | None = None
    vocab: VocabCut | None = None

    @property
    def text_only_child(self) -> bool:
        return self.modalities == ("text",)

    @property
    def record(self) -> dict[str, Any]:
        """The slice as config.json records it (`matslice`): what a rebuild must match."""
        return dict(self.child.record)

    @property
    def skipped_layers(self) -> list[int]:
        return [i for i in range(self.parent.text.num_hidden_layers) if i not in self.kept_layers]

    def summary(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what `matslice plan --json` prints)."""
        text, audio = self.child.text, self.child.audio
        return {
            "preset": self.preset,
            "model_type": self.child.model_type,
            "modalities": list(self.modalities),
            "kept_layers": list(self.kept_layers),
            "skipped_layers": self.skipped_layers,
            "text_config": {key: text.json()[key] for key in (
                "num_hidden_layers", "intermediate_size", "layer_types", "num_kv_shared_layers",
                "activation_sparsity_pattern")},
            "kv_roles": list(text.kv_roles),
            "audio_config": None if audio is None else {
                "conf_num_hidden_layers": audio.conf_num_hidden_layers,
                "kept_blocks": list(self.kept_audio_blocks or ()),
                "ffn_dim": self.audio_ffn_dim or audio.ffn_width,
                "ffn_dim_parent": audio.ffn_width,
            },
            "vocab": self.record.get("vocab"),
            "params": count_params(self.child),
            "parent_params": count_params(self.parent),
        }


def _check_indices(name: str, option: str, indices: tuple[int, ...], count: int) -> None:
    seen: set[int] = set()
    for index in indices:
        if not 0 <= index < count:
            raise UserError(f"{option} has index {index}, but the {name} has indices 0..{count - 1}: remove it")
        if index in seen:
            raise UserError(f"{option} lists index {index} twice: give each index once")
        seen.add(index)
    if len(seen) == count:
        raise UserError(f"{option} skips all {count} {name} indices: keep at least one")


def _ffn_dims(spec: SliceSpec, text: TextConfig, kept: tuple[int, ...]) -> tuple[int, ...]:
    parent = [text.intermediate_size[i] for i in kept]
    if not spec.ffn_dims:
        return tuple(parent)
    dims = spec.ffn_dims * len(kept) if len(spec.ffn_dims) == 1 else spec.ffn_dims
    if len(dims) != len(kept):
        raise UserError(
            f"--ffn-dims has {len(spec.ffn_dims)} widths for {len(kept)} kept layers: "
            f"give one width per kept layer, or a single width for all"
        )
    for position, (width, limit) in enumerate(zip(dims, parent, strict=True)):
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
            raise UserError(f"--ffn-dims entry {position} is {width!r}: widths are whole numbers above 0")
        if width > limit:
            raise UserError(
                f"--ffn-dims entry {position} ({width}) is wider than parent layer {kept[position]} ({limit}): "
                f"a slice can only narrow a layer"
            )
    return tuple(dims)


def _child_text(text: TextConfig, kept: tuple[int, ...], dims: tuple[int, ...]) -> TextConfig:
    """The child's decoder config, refusing any slice that breaks KV sharing."""
    for layer in kept:
        store = text.store_of(layer)
        if store is not None and store not in kept:
            raise UserError(
                f"layer {store} stores the KV cache that kept layer {layer} reuses, so it cannot be skipped: "
                f"keep layer {store}, or also skip every layer from {text.first_shared} on that reads it"
            )
    child = replace(
        text,
        num_hidden_layers=len(kept),
        intermediate_size=dims,
        layer_types=tuple(text.layer_types[i] for i in kept),
        activation_sparsity_pattern=tuple(text.activation_sparsity_pattern[i] for i in kept),
        num_kv_shared_layers=text.num_kv_shared_layers - sum(
            1 for i in range(text.first_shared, text.num_hidden_layers) if i not in kept),
    )
    for position, layer in enumerate(kept):  # defence in depth: the child must map as the parent did
        store = child.store_of(position)
        if (None if store is None else kept[store]) != text.store_of(layer):
            raise UserError(f"slicing would make layer {layer} read the wrong KV cache: keep its store layer")
    return child


def _modalities(spec: SliceSpec, config: ModelConfig) -> tuple[str, ...]:
    if not spec.modalities:
        return config.modalities
    wanted = parse_modalities(spec.modalities, config.modalities)
    if wanted not in (("text",), config.modalities):
        raise UserError(
            f"--modalities {','.join(wanted)}: stock transformers has no Gemma 3n class without a vision tower; "
            f"slice with --modalities text or keep all, then drop a session at export "
            f"(matslice export --modalities {','.join(wanted)})"
        )
    return wanted


def _kept_audio(spec: SliceSpec, audio: AudioConfig | None) -> tuple[int, ...] | None:
    if audio is None:
        if spec.audio_layers_to_skip or spec.audio_ffn_dim is not None:
            raise UserError("audio options need a checkpoint with an audio tower and audio kept in --modalities")
        return None
    blocks = audio.conf_num_hidden_layers
    _check_indices("audio encoder's blocks", "--audio-layers-to-skip", spec.audio_layers_to_skip, blocks)
    if spec.audio_ffn_dim is not None and not 0 < spec.audio_ffn_dim <= audio.ffn_width:
        raise UserError(f"--audio-ffn-dim {spec.audio_ffn_dim} is outside 1..{audio.ffn_width}, the parent's audio FFN")
    return tuple(j for j in range(blocks) if j not in spec.audio_layers_to_skip)


def make_plan(config: ModelConfig, spec: SliceSpec, vocab: VocabCut | None = None) -> SlicePlan:
    """Validate `spec` against the parent `config` and derive the child's config.

    A vocabulary cut (`spec.vocab_corpus`) is chosen from the parent's tokenizer and the corpus by
    `slicer.vocab.cut_for` and passed in as `vocab`: the plan itself reads no file.
    """
    if spec.cuts_vocab and not spec.vocab_corpus:
        raise UserError("--vocab-size caps a vocabulary cut: give the text it must cover with --vocab-corpus")
    if spec.cuts_vocab and vocab is None:
        raise UserError("--vocab-corpus needs the parent's tokenizer.json: pass the checkpoint folder, not a config")
    text = config.text
    _check_indices("parent's layers", "--layers-to-skip", spec.layers_to_skip, text.num_hidden_layers)
    kept = tuple(i for i in range(text.num_hidden_layers) if i not in spec.layers_to_skip)
    dims = _ffn_dims(spec, text, kept)
    child_text = _child_text(text, kept, dims)
    modalities = _modalities(spec, config)
    kept_blocks = _kept_audio(spec, config.audio if "audio" in modalities else None)
    audio_ffn = None
    if kept_blocks is not None and spec.audio_ffn_dim not in (None, config.audio.ffn_width):
        audio_ffn = spec.audio_ffn_dim
    record: dict[str, Any] = {"kept_layers": list(kept), "ffn_dims": list(dims), "modalities": list(modalities),
                              "preset": spec.preset}
    parent_source = dict(config.source)
    vision = config.vision
    if vocab is not None:
        parent_source = remap_config(parent_source, vocab)  # every token id and vocabulary size moves together
        child_text = replace(child_text, vocab_size=vocab.child_vocab,
                             vocab_size_per_layer_input=vocab.child_text_vocab)
        record["vocab"] = vocab_summary(vocab)
    if modalities == ("text",):
        source = {"model_type": "gemma3n_text", "architectures": [TEXT_ONLY_CLASS]}
        source |= {key: config.source[key] for key in ("dtype", "torch_dtype") if key in config.source}
        if config.multimodal:
            source = {**parent_source.get("text_config", {}), **source}
        else:
            source = {**parent_source, **source}
        child = ModelConfig(source | {"matslice": record}, child_text)
    else:
        audio = replace(config.audio, conf_num_hidden_layers=len(kept_blocks))
        if vocab is not None:
            audio = replace(audio, vocab_offset=vocab.remap_id(audio.vocab_offset, "audio_config.vocab_offset"))
            vision = replace(vision, vocab_offset=vocab.remap_id(vision.vocab_offset, "vision_config.vocab_offset"))
        # Units past ffn_dim in every conformer feed-forward are zero (see slicer/audio.py).
        record["audio"] = {"kept_blocks": list(kept_blocks), "ffn_dim": audio_ffn or audio.ffn_width}
        child = ModelConfig(parent_source | {"matslice": record}, child_text, audio, vision)
    return SlicePlan(config, child, kept, dims, kept_blocks, audio_ffn, modalities, spec.preset, vocab)


def count_params(config: ModelConfig, vision_params: int | None = None) -> dict[str, Any]:
    """Parameter counts of a checkpoint described by `config`, under both conventions.

    `effective` is what transformers >= 5 instantiates for the text decoder without `embed_tokens`
    and `embed_tokens_per_layer`; `effective_published` adds the k/v projections that Google's
    tables still count for KV-shared layers. Audio FFN units zeroed by a slice are not counted.
    """
    shapes = checkpoint_shapes(config)
    prefix = config.text_prefix
    text_total = sum(numel(s) for n, s in shapes.items() if n.startswith(prefix))
    per_layer = numel(shapes[prefix + "embed_tokens_per_layer.weight"])
    embeddings = numel(shapes[prefix + "embed_tokens.weight"]) + per_layer
    audio = sum(numel(s) for n, s in shapes.items() if n.startswith("model.audio_tower."))
    if config.audio is not None and config.live_audio_ffn:  # zeroed units are carried, not computed with
        hidden = config.audio.hidden_size
        audio -= 4 * config.audio.conf_num_hidden_layers * hidden * (4 * hidden - config.live_audio_ffn)
    embedders = sum(numel(s) for n, s in shapes.items() if n.startswith(("model.embed_audio.", "model.embed_vision.")))
    vision: int | None = 0
    if config.multimodal and vision_params is not None:
        vision = vision_params
    elif config.multimodal and not config.vision.customized:
        vision = VISION_PARAMS.get(config.vision.architecture, 0)
    elif config.multimodal:
        vision = None  # a customised timm tower: counted only from the checkpoint's own headers
    effective = text_total - embeddings
    return {
        "total": text_total + audio + embedders + (vision or 0),
        "text": text_total,
        "effective": effective,
        "effective_published": effective + shared_kv_params(config.text),
        "embeddings": embeddings,
        "per_layer_embeddings": per_layer,
        "audio": audio,
        "vision": vision,
        "multimodal_embedders": embedders,
    }
