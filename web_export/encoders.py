"""The modality sessions `audio_encoder` and `vision_encoder`, ending in LM space.

transformers.js scatters the rows of `audio_features` / `image_features` (flattened to [-1, H]) into
`inputs_embeds` at the audio/image placeholder ids and requires the counts to match exactly
(`default_merge_input_ids_with_features` in `models/modeling_utils.js`). So each session must end where
`Gemma3nModel.forward` scatters: after `embed_audio` / `embed_vision`, with the audio padded to
`audio_soft_tokens_per_image` tokens per clip, since the processor always inserts that many placeholders.
"""

from __future__ import annotations

import torch
from torch import nn

from web_export.checkpoint import Gemma3nParts


class AudioEncoderSession(nn.Module):
    """(input_features [B,T,F] float, input_features_mask [B,T] bool) -> audio_features [B,N,H].

    Mask polarity: the feature extractor (and transformers.js) send True for valid frames; the audio
    tower wants True for padding (web_export/TRAPS.md), so the mask is inverted here, as
    `Gemma3nModel.forward` does.
    """

    def __init__(self, parts: Gemma3nParts) -> None:
        super().__init__()
        self.model = parts.model.model
        self.num_tokens = parts.config.audio_soft_tokens_per_image
        self.padding_id = parts.text_config.vocab_size - 1

    def forward(self, input_features: torch.Tensor, input_features_mask: torch.Tensor) -> torch.Tensor:
        outputs = self.model.get_audio_features(input_features, ~input_features_mask.bool(), return_dict=True)
        features, padded = outputs.pooler_output, outputs.audio_mel_mask
        padding_ids = torch.full((1, 1), self.padding_id, dtype=torch.long, device=features.device)
        padding = self.model.embed_audio(input_ids=padding_ids)
        features = torch.where(padded.unsqueeze(-1), padding, features)
        batch, _, hidden = features.shape
        extra = padding.expand(batch, self.num_tokens, hidden)
        # Gemma3nModel appends exactly N - n padding rows; appending N and keeping N is the same for n <= N
        # and, unlike it, still yields N rows for clips longer than the processor allows.
        return torch.cat((features, extra), dim=1)[:, : self.num_tokens]


class VisionEncoderSession(nn.Module):
    """pixel_values [B,3,h,w] -> image_features [B,256,H] (`get_image_features(...).pooler_output`).

    h, w are fixed at export to the checkpoint's processor size (768 for Google's checkpoints); the tower
    pools whatever it gets to 16 x 16, but a static size keeps the graph free of shape arithmetic.
    """

    def __init__(self, parts: Gemma3nParts) -> None:
        super().__init__()
        self.model = parts.model.model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values, return_dict=True).pooler_output
