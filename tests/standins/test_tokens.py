"""The stand-ins' token layout (standins/tokens.py): Gemma 3n's order at a small size, every id contiguous."""

from __future__ import annotations

import pytest

from standins.tokens import CONTROL_TOKENS, TokenLayout


def test_tiny_layout_is_gemma_3n_order_at_288_ids() -> None:
    layout = TokenLayout(text_vocab=256)
    special = layout.special_tokens
    assert [special[token] for token in CONTROL_TOKENS] == list(range(7))
    assert (special["<start_of_image>"], special["<start_of_audio>"]) == (254, 255)
    assert (special["<end_of_image>"], special["<image_soft_token>"]) == (256, 257)
    assert (special["<end_of_audio>"], special["<audio_soft_token>"]) == (272, 273)
    assert layout.vocab_size == 288
    config = layout.multimodal_config({"model_type": "gemma3n_audio"}, {"model_type": "gemma3n_vision"})
    assert config["audio_config"] == {"model_type": "gemma3n_audio", "vocab_offset": 272, "vocab_size": 16}
    assert config["vision_config"]["vocab_offset"] == 256 and config["image_token_id"] == 257
    assert (config["boa_token_id"], config["eoa_token_id"], config["audio_token_id"]) == (255, 272, 273)


def test_vocab_is_contiguous_and_refuses_what_does_not_fit() -> None:
    layout = TokenLayout(text_vocab=16)
    vocab = layout.vocab(["a", "b"])
    assert sorted(vocab.values()) == list(range(layout.vocab_size))
    assert (vocab["a"], vocab["b"], vocab["<unused0>"]) == (7, 8, 9)
    with pytest.raises(ValueError, match="do not fit"):
        layout.vocab([chr(97 + i) for i in range(8)])  # 7 control ids + 8 > the 14 ids below <start_of_image>
    with pytest.raises(ValueError, match="repeat"):
        layout.vocab(["a", "<bos>"])
