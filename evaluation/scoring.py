"""Scoring one model at a time: a checkpoint in PyTorch or an exported bundle in onnxruntime.

Both give next-token log-probabilities for a window of token ids and audio-encoder features for a clip,
so `matslice eval` compares whatever ships (a bundle) or whatever was sliced (a checkpoint) the same way.
A scorer is closed before the next one opens: a real E4B never shares memory with its variant.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Protocol

import numpy as np

from evaluation.metrics import log_softmax
from slicer.errors import SliceError


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
    raise SliceError(f"{folder} is neither a checkpoint folder nor a bundle: pass one of those")


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
        from web_export.parity import OnnxGemma3n

        config = json.loads((folder / "config.json").read_text())
        dtype = dtype or _default_dtype(config)
        self.runner = OnnxGemma3n.from_bundle(folder, dtype)
        self.has_audio = "audio_encoder" in self.runner.sessions

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        embeds = self.runner.run("embed_tokens", {"input_ids": ids[None].astype(np.int64)})
        mask = np.ones((1, len(ids)), dtype=np.int64)
        feeds = {
            "inputs_embeds": embeds["inputs_embeds"], "per_layer_inputs": embeds["per_layer_inputs"],
            "attention_mask": mask, "position_ids": np.arange(len(ids), dtype=np.int64)[None],
            "num_logits_to_keep": np.array(0, dtype=np.int64), **self.runner.empty_past(1),
        }
        return log_softmax(self.runner.run("decoder_model_merged", feeds)["logits"][0])

    def audio_features(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_features": features.astype(np.float32), "input_features_mask": mask}
        return self.runner.run("audio_encoder", feeds)["audio_features"]

    def close(self) -> None:
        del self.runner
        gc.collect()


def _default_dtype(config: dict) -> str:
    dtype = config.get("transformers.js_config", {}).get("dtype", "fp32")
    return dtype if isinstance(dtype, str) else dtype.get("decoder_model_merged", "fp32")
