"""Tiny random Gemma 3n checkpoints, written fully offline.

Why this exists: the slicer and the web export must be tested on a real Gemma 3n folder (config.json,
safetensors, tokenizer, processor files) that exercises everything a slice touches: per-layer FFN widths,
KV sharing with store/reuse layers, activation sparsity, AltUp, LAuReL, per-layer embeddings and the audio
and vision towers. The published E2B/E4B checkpoints are gigabytes and gated, and nothing here may come from
the Hugging Face hub, so this module builds a stand-in with the same structure from a seed: 1.4 MB of
weights text-only, 66 MB multimodal (almost all of it the 1/8-width timm vision tower, whose attention
blocks and 2048-channel output do not shrink with the channel multiplier).

Token layout (288 ids), mirroring Gemma's real layout at a small scale:

- 0..6: ``<pad> <eos> <bos> <unk> <mask> <start_of_turn> <end_of_turn>``; then newline, ``▁`` (space),
  printable ASCII and a few BPE merges; ``<unusedN>`` fill the remaining text ids.
- 254 ``<start_of_image>``, 255 ``<start_of_audio>``: text ids, like Gemma's 255999 and 256000.
- 256..271: vision vocab (``embed_vision``); 256 ``<end_of_image>``, 257 ``<image_soft_token>``.
- 272..287: audio vocab (``embed_audio``); 272 ``<end_of_audio>``, 273 ``<audio_soft_token>``.

Per-layer embeddings cover ids < 256 only (ids above map to row 0, as in Gemma), so every ordinary text
token sits below 256. The text vocab size must equal the audio offset plus the audio vocab size because
Gemma3nModel pads audio features with the embedding of id ``vocab_size - 1`` through ``embed_audio``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import GemmaTokenizer

from standins.folder import (
    AUDIO_SOFT_TOKENS,
    VISION_HIDDEN_SIZE,
    VISION_SOFT_TOKENS,
    gemma_tokenizer,
    generation_config,
    random_model,
    timm_problem,
    warn_text_only,
    write_folder,
)
from standins.tokens import BOS_ID, END_OF_TURN_ID, EOS_ID, PAD_ID, TokenLayout

# --- Token ids -------------------------------------------------------------------------------------------
TOKENS = TokenLayout(text_vocab=256)
VOCAB_SIZE, PER_LAYER_VOCAB_SIZE, SPECIAL_TOKENS = TOKENS.vocab_size, TOKENS.text_vocab, TOKENS.special_tokens  # 288
# A handful of merges so the BPE merge path is exercised, not only single characters.
MERGES: list[tuple[str, str]] = [
    ("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("e", "r"), ("a", "n"), ("o", "n"), ("r", "e"),
    ("▁", "a"), ("▁", "s"), ("e", "n"), ("a", "t"), ("o", "u"), ("i", "s"), ("in", "g"), ("▁", "w"),
]  # fmt: skip

# --- Configs ---------------------------------------------------------------------------------------------
def _text_config() -> dict[str, Any]:
    """Text decoder small enough to run instantly, but with every structural feature a slice must respect.

    8 layers with the default layer_types rule give full attention at layer 4 only; with 3 KV-shared layers
    the store layers are 3 (sliding) and 4 (full), and layers 5-7 reuse their KV. Uneven FFN widths make
    per-layer slicing observable; the first two layers are sparse so the top-k path runs.
    """
    num_layers = 8
    return {
        "model_type": "gemma3n_text",
        "vocab_size": VOCAB_SIZE,
        "vocab_size_per_layer_input": PER_LAYER_VOCAB_SIZE,
        "hidden_size": 64,
        "hidden_size_per_layer_input": 16,
        "num_hidden_layers": num_layers,
        "intermediate_size": [128, 128, 96, 96, 128, 64, 64, 64],
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "laurel_rank": 8,
        "altup_num_inputs": 4,
        "num_kv_shared_layers": 3,
        "sliding_window": 16,
        "activation_sparsity_pattern": [0.95] * 2 + [0.0] * (num_layers - 2),
        "pad_token_id": PAD_ID,
        "eos_token_id": EOS_ID,
        "bos_token_id": BOS_ID,
    }


def _audio_config() -> dict[str, Any]:
    """Two conformer blocks of width 32; input_feat_size stays 128, the feature extractor's mel bin count."""
    return {
        "model_type": "gemma3n_audio",
        "hidden_size": 32,
        "conf_num_hidden_layers": 2,
        "conf_num_attention_heads": 2,
        "sscp_conv_channel_size": [16, 8],
        "input_feat_size": 128,
    }


def _vision_config() -> dict[str, Any]:
    """timm MobileNetV5 at 1/8 channel width (about 16M parameters, built with pretrained=False)."""
    return {
        "model_type": "gemma3n_vision",
        "architecture": "mobilenetv5_300m_enc",
        "model_args": {"channel_multiplier": 0.125},
        "hidden_size": VISION_HIDDEN_SIZE,
    }


def tiny_config(text_only: bool = False, vision: bool = True) -> dict:
    """config.json dict of the tiny Gemma 3n (model_type gemma3n with text/audio/vision configs, or gemma3n_text when text_only).

    Every key given here lands in config.json with this value; transformers adds its defaults around them.
    ``vision=False`` also yields the text-only config: stock Gemma3nModel always builds the timm vision tower,
    so without timm no multimodal Gemma 3n can be instantiated at all.
    """  # noqa: E501 (the first line is the API contract)
    if text_only or not vision:
        return {**_text_config(), "architectures": ["Gemma3nForCausalLM"]}
    return {
        "model_type": "gemma3n",
        "architectures": ["Gemma3nForConditionalGeneration"],
        "text_config": _text_config(),
        **TOKENS.multimodal_config(_audio_config(), _vision_config()),
        "audio_soft_tokens_per_image": AUDIO_SOFT_TOKENS,
        "vision_soft_tokens_per_image": VISION_SOFT_TOKENS,
    }


# --- Tokenizer and processor -----------------------------------------------------------------------------
def _vocab() -> dict[str, int]:
    """All 288 ids, contiguous, so len(tokenizer) equals the model's vocab_size and every id decodes."""
    return TOKENS.vocab(["\n", "▁"] + [chr(code) for code in range(33, 127)] + [a + b for a, b in MERGES])


def tokenizer() -> GemmaTokenizer:
    """GemmaTokenizer over the tiny vocab and merges."""
    return gemma_tokenizer(_vocab(), list(MERGES))


# --- Public entry point ----------------------------------------------------------------------------------
def write_tiny(out: Path, *, text_only: bool = False, seed: int = 0) -> Path:
    """Write a tiny random Gemma 3n checkpoint folder fully offline and return it.

    Multimodal by default (Gemma3nForConditionalGeneration with processor files); ``text_only`` writes a
    Gemma3nForCausalLM folder. Without a working timm the vision tower cannot exist, so the multimodal request
    falls back to text-only with one line on stderr. The same seed gives byte-identical files.
    """
    if not text_only and (problem := timm_problem()) is not None:
        warn_text_only("tiny", problem)
        text_only = True
    model = random_model(tiny_config(text_only=text_only), seed)
    model.generation_config = generation_config(BOS_ID, [EOS_ID, END_OF_TURN_ID], PAD_ID)
    return write_folder(out, model, tokenizer(), text_only=text_only)
