"""Quantization quality: KL divergence and top-1 agreement of each quantized bundle against fp32.

Measured on the default checkpoint (the trained nano model once it is the default: with random weights
these numbers only show the quantizer's rounding, not a language model's loss).
"""

from __future__ import annotations

from pathlib import Path

from evaluation.compare import evaluate
from web_export.bundle import write_bundle

VARIANTS = (("q4", 16), ("q4", 32), ("q4", 64), ("q4", 128), ("q4f16", 32), ("q8", 0))


def bench_quantization(model: Path, work: Path) -> dict:
    results = {}
    reference = write_bundle(model, work / "fp32", dtypes=("fp32",), modalities=set())
    for dtype, block in VARIANTS:
        options = {"block_size": block} if block else {}
        bundle = write_bundle(model, work / f"{dtype}-b{block}", dtypes=(dtype,), modalities=set(), **options)
        text = evaluate(bundle, reference, window=128, dtype=dtype, parent_dtype="fp32")["text"]
        results[f"{dtype}" if block in (0, 32) else f"{dtype}_b{block}"] = {
            "block_size": block or None, "kl": text["kl_mean"], "top1": text["top1_agreement"],
            "perplexity": text["variant_perplexity"], "fp32_perplexity": text["parent_perplexity"],
        }
    return results
