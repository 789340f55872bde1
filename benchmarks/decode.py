"""Decode speed: tokens per second of the exported decoders in onnxruntime against PyTorch eager.

Same model, same prompt, same number of greedy steps, one thread budget (this machine's cores), measured
back to back; the figures that matter are the ratios.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

PROMPT = 16
STEPS = 32


def torch_tokens_per_second(checkpoint: Path, steps: int = STEPS) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    ids = torch.arange(10, 10 + PROMPT)[None]
    with torch.no_grad():
        model.generate(ids, max_new_tokens=2, do_sample=False)  # warm-up
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    return (out.shape[1] - PROMPT) / (time.perf_counter() - start)


def onnx_tokens_per_second(bundle: Path, dtype: str, steps: int = STEPS) -> float:
    from web_export.runtime import BundleRuntime, Prompt

    runner = BundleRuntime.from_bundle(bundle, dtype)
    inputs = Prompt(np.arange(10, 10 + PROMPT))
    runner.greedy(inputs, 1)  # warm-up
    start = time.perf_counter()
    _, ids = runner.greedy(inputs, steps)
    assert len(ids) == steps + 1 and np.isfinite(ids).all()
    return (steps + 1) / (time.perf_counter() - start)
