"""Scoring one model at a time: a checkpoint in PyTorch or an exported bundle in onnxruntime.

Both give next-token log-probabilities for a window of token ids and audio-encoder features for a clip,
so `matslice eval` compares whatever ships (a bundle) or whatever was sliced (a checkpoint) the same way.
A scorer is closed before the next one opens: a real E4B never shares memory with its variant.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Protocol

import numpy as np

from evaluation.metrics import log_softmax
from gemma3n.errors import UserError


class Scorer(Protocol):
    has_audio: bool

    def log_probs(self, ids: np.ndarray) -> np.ndarray: ...

    def audio_features(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def is_bundle(folder: Path) -> bool:
    return (folder / "onnx").is_dir() and (folder / "manifest.json").is_file()


def open_scorer(folder: Path, dtype: str | None = None) -> Scorer:
    if is_bundle(folder):
        return OnnxScorer(folder, dtype)
    if (folder / "config.json").is_file():
        return TorchScorer(folder)
    raise UserError(f"{folder} is neither a checkpoint folder nor a bundle: pass one of those")


class TorchScorer:
    """A checkpoint in its own dtype (bfloat16 for Google's), multimodal or text-only."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, Gemma3nForConditionalGeneration

        config = AutoConfig.from_pretrained(folder)
        self.has_audio = config.model_type == "gemma3n"
        cls = Gemma3nForConditionalGeneration if self.has_audio else AutoModelForCausalLM
        self.model = cls.from_pretrained(folder, dtype="auto").eval()
        self._torch = torch

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            logits = self.model(input_ids=self._torch.from_numpy(ids)[None]).logits[0]
        return log_softmax(logits.float().numpy())

    def audio_features(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            out = self.model.model.get_audio_features(
                torch.from_numpy(features).to(self.model.dtype), torch.from_numpy(~mask.astype(bool)))
        return out.pooler_output.float().numpy()

    def close(self) -> None:
        del self.model
        gc.collect()


class OnnxScorer:
    """An exported bundle in onnxruntime, one dtype of its sessions (default: the bundle's own)."""

    def __init__(self, folder: Path, dtype: str | None):
        from web_export.runtime import BundleRuntime

        self.runner = BundleRuntime.from_bundle(folder, dtype)
        self.has_audio = "audio_encoder" in self.runner.sessions

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        from web_export.runtime import Prompt

        return log_softmax(self.runner.logits(Prompt(ids)))

    def audio_features(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_features": features.astype(np.float32), "input_features_mask": mask}
        return self.runner.run("audio_encoder", feeds)["audio_features"]

    def close(self) -> None:
        del self.runner
        gc.collect()
