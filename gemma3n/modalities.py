"""The modalities a Gemma 3n variant can keep, and the encoder session each one adds to a bundle."""

from __future__ import annotations

from collections.abc import Iterable

from gemma3n.errors import UserError

MODALITIES = ("text", "audio", "vision")
ENCODER_SESSIONS = {"audio": "audio_encoder", "vision": "vision_encoder"}
TEXT_SESSIONS = ("embed_tokens", "decoder_model_merged")


def parse_modalities(wanted: str | Iterable[str], present: tuple[str, ...],
                     option: str = "--modalities") -> tuple[str, ...]:
    """The modalities asked for, checked against those the checkpoint has, in canonical order, text first."""
    names = [m.strip() for m in (wanted.split(",") if isinstance(wanted, str) else wanted) if m.strip()]
    for name in names:
        if name not in MODALITIES:
            raise UserError(f"{option}: unknown modality {name!r}: choose from {', '.join(MODALITIES)}")
        if name not in present:
            raise UserError(f"{option}: the checkpoint has no {name} tower: choose from {', '.join(present)}")
    if "text" not in names:
        raise UserError(f"{option} must include text: every Gemma 3n variant decodes text")
    return tuple(m for m in MODALITIES if m in names)


def encoder_sessions(modalities: Iterable[str]) -> tuple[str, ...]:
    return tuple(ENCODER_SESSIONS[m] for m in MODALITIES if m in modalities and m in ENCODER_SESSIONS)
