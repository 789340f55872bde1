"""`matslice eval VARIANT PARENT`: what a variant loses against its parent, measured on text and speech.

The parent is scored first and its log-probabilities are spilled to a temporary file, then it is closed
and the variant is scored against them, so the two models are never in memory together.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.data import TEXT
from evaluation.metrics import TextTally, cosine
from evaluation.scoring import open_scorer


def windows(ids: list[int], bos: int, window: int) -> list[np.ndarray]:
    """Consecutive windows of at most `window` tokens, each starting with BOS."""
    step = window - 1
    return [np.array([bos, *ids[i:i + step]], dtype=np.int64) for i in range(0, len(ids), step)
            if len(ids[i:i + step]) >= 1]


def _audio_inputs(parent: Path, clips: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(parent)
    inputs = []
    for clip in clips:
        out = extractor(clip, sampling_rate=16_000, return_tensors="np")
        inputs.append((out["input_features"].astype(np.float32), out["input_features_mask"].astype(bool)))
    return inputs


def evaluate(variant: Path, parent: Path, *, text: str = TEXT, clips: list[np.ndarray] | None = None,
             window: int = 256, dtype: str | None = None, parent_dtype: str | None = None) -> dict[str, Any]:
    """Score `parent` then `variant` (checkpoints, or bundles run at `parent_dtype` / `dtype`)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(parent)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = windows(ids, tokenizer.bos_token_id, window)
    result: dict[str, Any] = {"variant": str(variant), "parent": str(parent), "tokens": len(ids),
                              "windows": len(chunks)}
    with tempfile.TemporaryDirectory(prefix="matslice-eval-") as spill:
        scorer = open_scorer(parent, parent_dtype)
        audio_ok = bool(clips) and scorer.has_audio
        audio_inputs = _audio_inputs(parent, clips) if audio_ok else []
        stored = []
        for i, chunk in enumerate(tqdm(chunks, desc="parent", unit="window")):
            path = Path(spill) / f"{i}.npy"
            np.save(path, scorer.log_probs(chunk)[:-1])
            stored.append(path)
        parent_audio = [scorer.audio_features(f, m) for f, m in audio_inputs]
        scorer.close()

        scorer = open_scorer(variant, dtype)
        tally = TextTally()
        for chunk, path in tqdm(list(zip(chunks, stored, strict=True)), desc="variant", unit="window"):
            tally.add(np.load(path, mmap_mode="r"), scorer.log_probs(chunk)[:-1], chunk[1:])
        result["text"] = tally.summary()
        if audio_ok and scorer.has_audio:
            per_clip = [cosine(a, scorer.audio_features(f, m)) for a, (f, m) in zip(parent_audio, audio_inputs,
                                                                                     strict=True)]
            result["audio"] = {"clips": len(per_clip), "cosine_mean": float(np.mean(per_clip)), "per_clip": per_clip}
        else:
            result["audio"] = None
        scorer.close()
    return result
