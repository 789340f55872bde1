"""The text-side sessions: `embed_tokens` and `decoder_model_merged`, as transformers.js runs them.

transformers.js (`models/gemma3n/modeling_gemma3n.js`) runs `embed_tokens` on the token ids of every step,
overwrites the image/audio placeholder rows of `inputs_embeds` with encoder features on the prefill step,
and feeds the result to `decoder_model_merged` (`decoder_forward` in `models/modeling_utils.js`).
So the split must fall exactly where `Gemma3nModel.forward` merges modalities:

* `embed_tokens` returns what `Gemma3nModel` has before the merge: scaled text embeddings, with the
  vision/audio hard-token rows replaced by the multimodal embedders, and the raw per-layer embeddings
  (`get_per_layer_inputs`; ids outside the per-layer vocabulary read row 0).
* `decoder_model_merged` does everything after the merge, including the per-layer projection that
  depends on the merged embeddings.

The cache keeps the full history on every KV-owning layer (a config-less DynamicCache) and the sliding
window is applied by the mask, which is what transformers.js does: it concatenates presents into pasts
without truncating. KV-shared ("reuse") layers have no cache of their own and no past/present tensors.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache, Gemma3nTextConfig

from gemma3n.layout import ROTARY_SPLIT
from web_export.checkpoint import Gemma3nParts


class EmbedTokensSession(nn.Module):
    """input_ids -> (inputs_embeds, per_layer_inputs) as `Gemma3nModel.forward` computes them pre-merge."""

    def __init__(self, parts: Gemma3nParts) -> None:
        super().__init__()
        self.text_model = parts.text_model
        self.embed_vision = parts.model.model.embed_vision if parts.is_multimodal else None
        self.embed_audio = parts.model.model.embed_audio if parts.is_multimodal else None

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs_embeds = self.text_model.embed_tokens(input_ids)
        per_layer_inputs = self.text_model.get_per_layer_inputs(input_ids)
        if self.embed_vision is not None:
            inputs_embeds = self._embed_hard_tokens(input_ids, inputs_embeds)
        return inputs_embeds, per_layer_inputs

    def _embed_hard_tokens(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Vision ids in [vision_offset, audio_offset) and audio ids >= audio_offset use their embedders."""
        vision, audio = self.embed_vision, self.embed_audio
        vision_mask = torch.logical_and(input_ids >= vision.vocab_offset, input_ids < audio.vocab_offset)
        vision_ids = torch.where(vision_mask, input_ids, vision.vocab_offset + vision.vocab_size - 1)
        inputs_embeds = torch.where(vision_mask.unsqueeze(-1), vision(input_ids=vision_ids), inputs_embeds)
        audio_mask = input_ids >= audio.vocab_offset
        audio_ids = torch.where(audio_mask, input_ids, audio.vocab_offset + audio.vocab_size - 1)
        return torch.where(audio_mask.unsqueeze(-1), audio(input_ids=audio_ids), inputs_embeds)


def kv_layer_count(text_config: Gemma3nTextConfig) -> int:
    """Layers that own a KV cache: all before the first KV-shared layer, which are exactly 0..n-1."""
    return text_config.num_hidden_layers - text_config.num_kv_shared_layers


def attention_masks(
    attention_mask: torch.Tensor, query_length: int, sliding_window: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Additive [B, 1, S, T] masks per layer type, as transformers' eager masks for a full-history cache.

    Queries are the last `query_length` of the T = attention_mask.shape[1] positions. Key j is visible to
    query i when j <= i, attention_mask[b, j] is set, and, for sliding layers, i - j < sliding_window.
    """
    total_length = attention_mask.shape[1]
    kv_index = torch.arange(total_length, device=attention_mask.device)
    q_index = kv_index[total_length - query_length :]
    causal = kv_index[None, :] <= q_index[:, None]
    in_window = kv_index[None, :] > q_index[:, None] - sliding_window
    valid_key = attention_mask.bool()[:, None, None, :]
    full = torch.logical_and(causal[None, None], valid_key)
    sliding = torch.logical_and(full, in_window[None, None])
    blocked = torch.finfo(dtype).min
    return {
        "full_attention": torch.where(full, 0.0, blocked).to(dtype),
        "sliding_attention": torch.where(sliding, 0.0, blocked).to(dtype),
    }


def keep_last_positions(hidden_states: torch.Tensor, num_logits_to_keep: torch.Tensor) -> torch.Tensor:
    """The last `num_logits_to_keep` positions, or all of them for 0 (transformers.js convention)."""
    length = hidden_states.shape[1]
    keep = torch.where(num_logits_to_keep > 0, torch.clamp(num_logits_to_keep, max=length), length)
    start = (length - keep).item()
    torch._check(start >= 0)
    torch._check(start <= length)
    return hidden_states[:, start:]


class TableRotaryEmbedding(nn.Module):
    """Gemma 3n's rotary cos/sin from two small float64-exact tables instead of Cos/Sin on the angle.

    WGSL allows sin/cos an absolute error of 2^-11, and onnxruntime-web's WebGPU kernels on SwiftShader show
    ~5e-4 in every rotated key: a deep model amplifies that (a full-shape E0.40B picked a different first
    token on WebGPU than on the CPU). With position p = 256 * hi + lo, cos(p f) and sin(p f) come from
    cos/sin(256 hi f) and cos/sin(lo f) by the angle-sum identities: two Gathers, four Muls, ~1e-7 error
    everywhere, and the tables cost (max_positions / 256 + 256) x head_dim/2 x 4 values per rope type.
    """

    SPLIT = ROTARY_SPLIT  # shared with slicer/footprint.py, which counts these tables' bytes

    def __init__(self, rotary: nn.Module, config: Gemma3nTextConfig) -> None:
        super().__init__()
        self.layer_types = list(rotary.rope_type)
        high = -(-int(config.max_position_embeddings) // self.SPLIT)
        for layer_type in self.layer_types:
            inv_freq = getattr(rotary, f"{layer_type}_inv_freq").double()
            scaling = float(getattr(rotary, f"{layer_type}_attention_scaling"))
            tables = {
                "hi": torch.arange(high, dtype=torch.float64)[:, None] * self.SPLIT * inv_freq,
                "lo": torch.arange(self.SPLIT, dtype=torch.float64)[:, None] * inv_freq,
            }
            for part, angle in tables.items():
                # the scaling multiplies the hi part only, so the products carry it once
                factor = scaling if part == "hi" else 1.0
                self.register_buffer(f"{layer_type}_{part}_cos", (angle.cos() * factor).float(), persistent=False)
                self.register_buffer(f"{layer_type}_{part}_sin", (angle.sin() * factor).float(), persistent=False)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str) -> tuple[torch.Tensor, ...]:
        high, low = position_ids // self.SPLIT, position_ids % self.SPLIT
        a, b = getattr(self, f"{layer_type}_hi_cos")[high], getattr(self, f"{layer_type}_hi_sin")[high]
        c, d = getattr(self, f"{layer_type}_lo_cos")[low], getattr(self, f"{layer_type}_lo_sin")[low]
        cos, sin = a * c - b * d, b * c + a * d
        return torch.cat((cos, cos), dim=-1).to(x.dtype), torch.cat((sin, sin), dim=-1).to(x.dtype)


class DecoderSession(nn.Module):
    """The merged decoder with cache: one graph for prefill (empty past) and decode steps.

    Inputs: inputs_embeds, per_layer_inputs, attention_mask, position_ids, num_logits_to_keep, then
    past key/value for each KV-owning layer in order (key, value, key, value, ...).
    Outputs: logits, then present key/value in the same order.
    """

    def __init__(self, parts: Gemma3nParts) -> None:
        super().__init__()
        self.text_model = parts.text_model
        self.lm_head = parts.lm_head
        self.sliding_window = parts.text_config.sliding_window
        self.softcap = parts.text_config.final_logit_softcapping
        self.kv_layers = kv_layer_count(parts.text_config)
        self.rotary = TableRotaryEmbedding(parts.text_model.rotary_emb, parts.text_config)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        per_layer_inputs: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        num_logits_to_keep: torch.Tensor,
        *past_key_values: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        pairs = [(past_key_values[2 * i], past_key_values[2 * i + 1]) for i in range(self.kv_layers)]
        cache = DynamicCache(ddp_cache_data=pairs)
        masks = attention_masks(
            attention_mask, inputs_embeds.shape[1], self.sliding_window, inputs_embeds.dtype
        )
        original, self.text_model.rotary_emb = self.text_model.rotary_emb, self.rotary
        try:
            outputs = self.text_model(
                inputs_embeds=inputs_embeds,
                per_layer_inputs=per_layer_inputs,
                attention_mask=masks,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            )
        finally:
            self.text_model.rotary_emb = original
        hidden_states = keep_last_positions(outputs.last_hidden_state, num_logits_to_keep)
        logits = self._softcap(self.lm_head(hidden_states))
        presents = [t for layer in cache.layers[: self.kv_layers] for t in (layer.keys, layer.values)]
        return (logits, *presents)

    def _softcap(self, logits: torch.Tensor) -> torch.Tensor:
        if self.softcap is None:
            return logits
        return torch.tanh(logits / self.softcap) * self.softcap
