"""Exported sessions against the PyTorch model: what `matslice verify` checks, dtype by dtype.

The reference is the unmodified checkpoint run by transformers (eager attention, a config-less
DynamicCache, greedy decoding); the bundle runs in onnxruntime exactly as transformers.js drives it
(`web_export.runtime`). Each side decodes greedily on its own, so diverging ids show up as diverging
logits, and the decode runs past the sliding window (by default) so the mask-based window over a
full-history cache is exercised on both the KV-owning and the KV-sharing layers.

Weight-only dtypes are compared exactly: fp32 against PyTorch, q4 against PyTorch running the q4 graphs'
own dequantized weights (`evaluation.dequantized`; random weights round too badly at 4 bits for a
comparison with fp32 to mean anything). fp16, q4f16 (fp16 arithmetic) and q8 (activations quantized at
run time) cannot match exactly; they are compared teacher-forced on PyTorch's greedy continuation, by mean
KL divergence and top-1 agreement of the next-token distributions, against the thresholds in TOLERANCES.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache

from evaluation.metrics import divergence
from gemma3n.dtypes import DTYPES
from gemma3n.modalities import ENCODER_SESSIONS
from web_export.checkpoint import Gemma3nParts, load_parts
from web_export.encoders import AudioEncoderSession, VisionEncoderSession
from web_export.export import ONNX_SUBDIR
from web_export.quantize import variant_name
from web_export.runtime import BundleRuntime, Prompt
from web_export.sessions import wanted_modalities

AUDIO_FRAMES = 100
AUDIO_VALID_FRAMES = 80  # the rest is padding, so the mask polarity matters


@dataclass(frozen=True)
class Tolerance:
    """What a dtype must meet. `max_logits_diff` set: exact (with equal greedy ids); else KL and top-1."""

    reference: str
    max_logits_diff: float | None = None
    max_kl: float | None = None
    min_top1: float | None = None


# The lossy limits sit about 10x above the largest mean KL measured (one-off, 2026-12-07, `matslice verify` on the
# tiny multimodal bundle of tests/evaluation/test_verify.py and on the trained nano model's text bundles):
# fp16 1.3e-5 (tiny; nano 3.7e-7), q4f16 1.3e-5 (tiny; nano 7.6e-7), q8 1.28e-3 (nano, top-1 0.95; tiny 7.7e-5,
# top-1 0.889). A trained model's sharper distributions move more under q8's activation rounding than random ones.
TOLERANCES = {
    "fp32": Tolerance("pytorch fp32", max_logits_diff=1e-4),
    "q4": Tolerance("pytorch, the bundle's dequantized weights", max_logits_diff=1e-4),
    "fp16": Tolerance("pytorch fp32", max_kl=1.5e-4, min_top1=0.9),
    "q4f16": Tolerance("pytorch, the bundle's dequantized weights", max_kl=1.5e-4, min_top1=0.9),
    "q8": Tolerance("pytorch fp32", max_kl=1.5e-2, min_top1=0.75),
}


@dataclass
class ParityReport:
    """Per-step max |logits diff| (step 0: all prompt positions), both greedy id sequences, and the
    teacher-forced KL / top-1 agreement on PyTorch's sequence."""

    dtype: str
    logits_max_diff: list[float]
    torch_ids: list[int]
    onnx_ids: list[int]
    kl_mean: float
    top1: float
    encoder_max_diff: dict[str, float] = field(default_factory=dict)
    positions: int = 0

    @property
    def max_logits_diff(self) -> float:
        return max(self.logits_max_diff)

    @property
    def tolerance(self) -> Tolerance:
        return TOLERANCES[self.dtype]

    @property
    def passed(self) -> bool:
        tol = self.tolerance
        if tol.max_logits_diff is not None:
            return self.max_logits_diff <= tol.max_logits_diff and self.torch_ids == self.onnx_ids
        return self.kl_mean <= tol.max_kl and self.top1 >= tol.min_top1

    def summary(self) -> dict:
        tol = self.tolerance
        return {"passed": self.passed, "reference": tol.reference, "tolerance": {k: v for k, v in vars(tol).items()
                                                                                if k != "reference" and v is not None},
                "max_abs_logits_diff": self.max_logits_diff, "per_step": self.logits_max_diff,
                "kl_mean": self.kl_mean, "top1_agreement": self.top1, "positions": self.positions,
                "encoders": self.encoder_max_diff, "torch_ids": self.torch_ids, "onnx_ids": self.onnx_ids,
                "ids_match": self.torch_ids == self.onnx_ids}


def default_steps(parts: Gemma3nParts, prompt_length: int, minimum: int = 24) -> int:
    """Decode steps that carry the sequence 8 tokens past the sliding window (at least `minimum`)."""
    return max(minimum, parts.text_config.sliding_window - prompt_length + 8)


def check_parity(model_dir: Path, out_dir: Path, dtype: str = "fp32", steps: int | None = None,
                 modalities: set[str] | None = None) -> ParityReport:
    """Compare `out_dir/onnx/<session><suffix>.onnx` of `dtype` with the checkpoint on a fixed prompt and
    `steps` cached decode steps (None: past the sliding window). `modalities` picks which encoders feed the
    prompt (None: those the bundle has: a text-only export of a multimodal checkpoint is checked on text)."""
    parts = load_parts(Path(model_dir))
    onnx_dir = Path(out_dir) / ONNX_SUBDIR
    runner = BundleRuntime.from_folder(onnx_dir, DTYPES[dtype].suffix,
                                       image_token_id=getattr(parts.config, "image_token_id", None),
                                       audio_token_id=getattr(parts.config, "audio_token_id", None))
    if modalities is None:
        modalities = {m for m, session in ENCODER_SESSIONS.items() if session in runner.sessions}
    inputs = fixed_inputs(parts, modalities)
    if "dequantized" in TOLERANCES[dtype].reference:
        from evaluation.dequantized import load_dequantized

        load_dequantized(parts.model, [onnx_dir / variant_name(name, dtype) for name in runner.sessions])
    steps = default_steps(parts, inputs.input_ids.shape[1]) if steps is None else steps
    torch_logits, torch_ids = torch_greedy(parts, inputs, steps)
    onnx_logits, onnx_ids = runner.greedy(as_prompt(inputs), steps)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(torch_logits, onnx_logits, strict=True)]
    # teacher-forced: both sides score PyTorch's own sequence, position by position
    sequence = [*inputs.input_ids[0].tolist(), *torch_ids[:-1]]
    forced = runner.logits(as_prompt(inputs).with_ids(sequence))
    expected = np.concatenate([torch_logits[0], *torch_logits[1:]], axis=0)
    kl, top1 = divergence(expected, forced)
    return ParityReport(dtype, diffs, torch_ids, onnx_ids, kl, top1, encoder_diffs(parts, runner, inputs),
                        len(sequence))


@dataclass
class TorchInputs:
    """One fixed prompt, with the modality tensors its placeholder tokens stand for."""

    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None = None
    input_features: torch.Tensor | None = None
    input_features_mask: torch.Tensor | None = None


def as_prompt(inputs: TorchInputs) -> Prompt:
    arrays = {k: (None if v is None else v.numpy()) for k, v in vars(inputs).items()}
    return Prompt(**arrays)


def fixed_inputs(parts: Gemma3nParts, modalities: set[str] | None = None) -> TorchInputs:
    """A short text prompt; on multimodal checkpoints, an image and a partly padded audio clip inside it."""
    wanted = wanted_modalities(parts, modalities)
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, min(parts.text_config.vocab_size_per_layer_input, 250), (12,), generator=generator)
    ids = [parts.text_config.bos_token_id, *text[:6].tolist()]
    inputs = TorchInputs(input_ids=torch.empty(0))
    cfg = parts.config
    if "vision" in wanted:
        ids += [cfg.boi_token_id, *[cfg.image_token_id] * cfg.vision_soft_tokens_per_image, cfg.eoi_token_id]
        inputs.pixel_values = torch.rand(1, 3, *parts.image_size, generator=generator)
    if "audio" in wanted:
        ids += [cfg.boa_token_id, *[cfg.audio_token_id] * cfg.audio_soft_tokens_per_image, cfg.eoa_token_id]
        feature_size = cfg.audio_config.input_feat_size
        inputs.input_features = torch.randn(1, AUDIO_FRAMES, feature_size, generator=generator)
        inputs.input_features_mask = torch.arange(AUDIO_FRAMES)[None, :] < AUDIO_VALID_FRAMES
    inputs.input_ids = torch.tensor([ids + text[6:].tolist()], dtype=torch.long)
    return inputs


@torch.no_grad()
def torch_greedy(parts: Gemma3nParts, inputs: TorchInputs, steps: int) -> tuple[list[np.ndarray], list[int]]:
    """Prefill plus `steps` cached greedy steps of the stock transformers model."""
    cache = DynamicCache()
    attention_mask = torch.ones_like(inputs.input_ids)
    multimodal = {k: v for k in ("pixel_values", "input_features", "input_features_mask")
                  if (v := getattr(inputs, k)) is not None}
    out = parts.model(input_ids=inputs.input_ids, attention_mask=attention_mask, cache=cache, use_cache=True,
                      **multimodal)
    all_logits, ids = [out.logits[0].numpy()], [int(out.logits[0, -1].argmax())]
    for _ in range(steps):
        attention_mask = torch.cat([attention_mask, torch.ones(1, 1, dtype=torch.long)], dim=1)
        out = parts.model(input_ids=torch.tensor([[ids[-1]]]), attention_mask=attention_mask, cache=cache,
                          use_cache=True)
        all_logits.append(out.logits[0].numpy())
        ids.append(int(out.logits[0, -1].argmax()))
    return all_logits, ids


@torch.no_grad()
def encoder_diffs(parts: Gemma3nParts, runner: BundleRuntime, inputs: TorchInputs) -> dict[str, float]:
    """Max |diff| of each encoder session's output against its PyTorch wrapper on the same inputs."""
    diffs = {}
    if inputs.pixel_values is not None and "vision_encoder" in runner.sessions:
        expected = VisionEncoderSession(parts)(inputs.pixel_values).numpy()
        got = runner.run("vision_encoder", {"pixel_values": inputs.pixel_values.numpy()})["image_features"]
        diffs["vision_encoder"] = float(np.abs(expected - got).max())
    if inputs.input_features is not None and "audio_encoder" in runner.sessions:
        expected = AudioEncoderSession(parts)(inputs.input_features, inputs.input_features_mask).numpy()
        feeds = {"input_features": inputs.input_features.numpy(),
                 "input_features_mask": inputs.input_features_mask.numpy()}
        got = runner.run("audio_encoder", feeds)["audio_features"]
        diffs["audio_encoder"] = float(np.abs(expected - got).max())
    return diffs
