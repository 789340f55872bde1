"""The token layout both stand-in Gemma 3n models use: Gemma 3n's order at a smaller size.

Seven control tokens at ids 0-6, then the text ids, the last two of which are `<start_of_image>` and
`<start_of_audio>`; then a block of vision ids opening with `<end_of_image>` and `<image_soft_token>`, and a block
of audio ids opening with `<end_of_audio>` and `<audio_soft_token>` (each block is what Gemma 3n's config calls a
modality's vocab_offset and vocab_size). The tiny and nano models differ only in how many text ids they have.
No torch here: the nano recipe, which the demo and the site build read, is built on it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

CONTROL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
PAD_ID, EOS_ID, BOS_ID, UNK_ID, MASK_ID, START_OF_TURN_ID, END_OF_TURN_ID = range(len(CONTROL_TOKENS))
BLOCK = 16  # ids in each of the vision and audio blocks


@dataclass(frozen=True)
class TokenLayout:
    """Every special id of a stand-in with `text_vocab` text ids (the per-layer embeddings' vocabulary too)."""

    text_vocab: int

    @property
    def boi(self) -> int:
        return self.text_vocab - 2

    @property
    def boa(self) -> int:
        return self.text_vocab - 1

    @property
    def vision_offset(self) -> int:
        return self.text_vocab

    @property
    def audio_offset(self) -> int:
        return self.vision_offset + BLOCK

    @property
    def vocab_size(self) -> int:
        return self.audio_offset + BLOCK

    @property
    def special_tokens(self) -> dict[str, int]:
        """Each special token's id, control tokens first."""
        return {token: i for i, token in enumerate(CONTROL_TOKENS)} | {
            "<start_of_image>": self.boi, "<start_of_audio>": self.boa,
            "<end_of_image>": self.vision_offset, "<image_soft_token>": self.vision_offset + 1,
            "<end_of_audio>": self.audio_offset, "<audio_soft_token>": self.audio_offset + 1,
        }

    def multimodal_config(self, audio: dict[str, Any], vision: dict[str, Any]) -> dict[str, Any]:
        """The multimodal config.json's id fields: the towers' configs given their blocks, and the marker ids."""
        return {
            "audio_config": audio | {"vocab_offset": self.audio_offset, "vocab_size": BLOCK},
            "vision_config": vision | {"vocab_offset": self.vision_offset, "vocab_size": BLOCK},
            "boi_token_id": self.boi, "eoi_token_id": self.vision_offset, "image_token_id": self.vision_offset + 1,
            "boa_token_id": self.boa, "eoa_token_id": self.audio_offset, "audio_token_id": self.audio_offset + 1,
        }

    def vocab(self, text_tokens: list[str]) -> dict[str, int]:
        """Every id, contiguous, so len(tokenizer) equals the model's vocab_size and every id decodes: the special
        tokens, `text_tokens` from the first id after the control tokens, `<unusedN>` for the ids left over."""
        first, special = len(CONTROL_TOKENS), self.special_tokens
        if first + len(text_tokens) > self.boi:
            raise ValueError(f"{len(text_tokens)} text tokens do not fit in {self.boi - first} text ids")
        if len(set(text_tokens) | set(special)) != len(text_tokens) + len(special):
            raise ValueError("the text tokens repeat one another or a special token")
        by_id = {token_id: token for token, token_id in special.items()}
        by_id |= {first + i: token for i, token in enumerate(text_tokens)}
        unused = itertools.count()
        return {by_id.get(i) or f"<unused{next(unused)}>": i for i in range(self.vocab_size)}
