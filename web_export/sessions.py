"""The I/O contract of each ONNX session with transformers.js 4.x, in one place.

Names, dtypes and dynamic dimensions here are what the runtime reads, so they are not free choices:
* session names come from `MODEL_SESSION_CONFIG[ImageAudioTextToText]` (`models/session_config.js`);
* tensor names from `models/gemma3n/modeling_gemma3n.js` and `decoder_forward` / `getPastKeyValues`
  (`models/modeling_utils.js`): `present.N.key` becomes `past_key_values.N.key` on the next step;
* the first step's empty pasts are built from the graph's declared input shapes, with the symbol
  `batch_size` resolved and every other symbol set to 0, so the batch axis must be named `batch_size`
  and the head axes must be static (`addPastKeyValues` / `resolveCacheShape`);
* `num_logits_to_keep` (int64 scalar) and `position_ids` are fed only because the graph declares them.
Example inputs are only used for tracing; their sizes avoid 0 and 1 so no axis gets specialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gemma3n.modalities import ENCODER_SESSIONS
from web_export.checkpoint import Gemma3nParts
from web_export.decoder import DecoderSession, EmbedTokensSession, kv_layer_count
from web_export.encoders import AudioEncoderSession, VisionEncoderSession

BATCH = "batch_size"
SEQUENCE = "sequence_length"
PAST = "past_sequence_length"
TOTAL = "total_sequence_length"
FRAMES = "num_frames"


@dataclass(frozen=True)
class SessionSpec:
    """Everything torch.onnx.export needs for one session."""

    name: str
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_shapes: tuple[Any, ...]


def past_names(text_config: Any, prefix: str = "past_key_values") -> tuple[str, ...]:
    """`<prefix>.N.key`, `<prefix>.N.value` for each KV-owning layer N, in graph order."""
    layers = range(kv_layer_count(text_config))
    return tuple(f"{prefix}.{i}.{kind}" for i in layers for kind in ("key", "value"))


def embed_tokens_spec(parts: Gemma3nParts) -> SessionSpec:
    vocab = parts.text_config.vocab_size
    input_ids = torch.arange(10, dtype=torch.long).reshape(2, 5) * (vocab // 10)
    return SessionSpec(
        name="embed_tokens",
        module=EmbedTokensSession(parts),
        example_inputs=(input_ids,),
        input_names=("input_ids",),
        output_names=("inputs_embeds", "per_layer_inputs"),
        dynamic_shapes=({0: BATCH, 1: SEQUENCE},),
    )


def decoder_spec(parts: Gemma3nParts) -> SessionSpec:
    cfg = parts.text_config
    batch, seq, past = 2, 3, 4
    generator = torch.Generator().manual_seed(0)
    kv_shape = (batch, cfg.num_key_value_heads, past, cfg.head_dim)
    pasts = tuple(torch.randn(kv_shape, generator=generator) for _ in past_names(cfg))
    example = (
        torch.randn(batch, seq, cfg.hidden_size, generator=generator),
        torch.randn(batch, seq, cfg.num_hidden_layers, cfg.hidden_size_per_layer_input, generator=generator),
        torch.ones(batch, past + seq, dtype=torch.long),
        torch.arange(past, past + seq, dtype=torch.long).expand(batch, seq),
        torch.tensor(0, dtype=torch.long),
    )
    past_dims = tuple({0: BATCH, 2: PAST} for _ in pasts)
    return SessionSpec(
        name="decoder_model_merged",
        module=DecoderSession(parts),
        example_inputs=example + pasts,
        input_names=(
            "inputs_embeds",
            "per_layer_inputs",
            "attention_mask",
            "position_ids",
            "num_logits_to_keep",
        )
        + past_names(cfg),
        output_names=("logits",) + past_names(cfg, prefix="present"),
        dynamic_shapes=(
            {0: BATCH, 1: SEQUENCE},
            {0: BATCH, 1: SEQUENCE},
            {0: BATCH, 1: TOTAL},
            {0: BATCH, 1: SEQUENCE},
            None,
            past_dims,
        ),
    )


def audio_encoder_spec(parts: Gemma3nParts) -> SessionSpec:
    feature_size = parts.model.config.audio_config.input_feat_size
    frames = 100  # 25 frames after subsampling: not a multiple of the 12-frame attention chunk
    features = torch.randn(2, frames, feature_size, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, frames, dtype=torch.bool)
    mask[1, frames // 2 :] = False
    return SessionSpec(
        name="audio_encoder",
        module=AudioEncoderSession(parts),
        example_inputs=(features, mask),
        input_names=("input_features", "input_features_mask"),
        output_names=("audio_features",),
        dynamic_shapes=({0: BATCH, 1: FRAMES}, {0: BATCH, 1: FRAMES}),
    )


def vision_encoder_spec(parts: Gemma3nParts) -> SessionSpec:
    pixels = torch.rand(2, 3, *parts.image_size, generator=torch.Generator().manual_seed(0))
    return SessionSpec(
        name="vision_encoder",
        module=VisionEncoderSession(parts),
        example_inputs=(pixels,),
        input_names=("pixel_values",),
        output_names=("image_features",),
        dynamic_shapes=({0: BATCH},),
    )


def wanted_modalities(parts: Gemma3nParts, modalities: set[str] | None) -> set[str]:
    """The requested modalities, checked; None means every modality the checkpoint has.

    A text-only checkpoint has no encoders; asking it for one is an error rather than a silent omission,
    since the bundle would then fail in the browser.
    """
    wanted = set(ENCODER_SESSIONS) if modalities is None and parts.is_multimodal else set(modalities or ())
    unknown = wanted - set(ENCODER_SESSIONS)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {sorted(ENCODER_SESSIONS)}")
    if wanted and not parts.is_multimodal:
        raise ValueError(f"text-only checkpoint has no {sorted(wanted)} encoder")
    return wanted


def session_specs(parts: Gemma3nParts, modalities: set[str] | None = None) -> list[SessionSpec]:
    """Specs for the text sessions plus the requested modality encoders (see `wanted_modalities`)."""
    wanted = wanted_modalities(parts, modalities)
    specs = [embed_tokens_spec(parts), decoder_spec(parts)]
    if "audio" in wanted:
        specs.append(audio_encoder_spec(parts))
    if "vision" in wanted:
        specs.append(vision_encoder_spec(parts))
    return specs
