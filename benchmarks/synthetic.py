"""Synthetic full-size Gemma 3n checkpoints: real tensor shapes, cheap deterministic bytes.

The benchmarks need E4B's real shapes (35 layers of 2048 x 16384 FFNs, the per-layer embedding table)
but no real weights. Bytes come from one seeded 16 MiB block written again and again, so a 10 GB
checkpoint is written at disk speed and is the same every time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gemma3n.config import e4b_json, parse_config
from gemma3n.safetensors import OutTensor, ShardWriter
from gemma3n.shapes import text_shapes

BLOCK = 16 << 20


def synthetic_text_config(vocab_divisor: int = 4) -> dict:
    """E4B's text decoder as a gemma3n_text config, with the two vocabularies divided by `vocab_divisor`."""
    text = e4b_json()["text_config"]
    text["vocab_size"] //= vocab_divisor
    text["vocab_size_per_layer_input"] //= vocab_divisor
    return text | {"model_type": "gemma3n_text", "architectures": ["Gemma3nForCausalLM"], "dtype": "bfloat16"}


def write_synthetic(out: Path, config: dict, max_shard_bytes: int = 4 << 30, seed: int = 0,
                    tokenizer: tuple[dict, dict] | None = None) -> Path:
    """Write a bfloat16 checkpoint of `config`'s text shapes to `out` (sharded like Google's), with the tiny
    model's tokenizer files, or `tokenizer` (tokenizer.json and tokenizer_config.json contents) when given."""
    out.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(seed).integers(0, 256, BLOCK, dtype=np.uint8)
    block[1::2] &= 0x3F  # keep bfloat16 exponents small: finite, modest values
    text = parse_config(config, str(out)).text
    tensors = [OutTensor(name, "BF16", shape) for name, shape in sorted(text_shapes(text, "model.").items())]
    writer = ShardWriter(out, tensors, max_shard_bytes)
    for tensor in tensors:
        writer.begin(tensor.name)
        remaining = tensor.nbytes
        while remaining:
            step = min(remaining, BLOCK)
            writer.write(block[:step])
            remaining -= step
    writer.close()
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    _tokenizer_files(out)
    if tokenizer is not None:
        for name, data in zip(("tokenizer.json", "tokenizer_config.json"), tokenizer, strict=True):
            (out / name).write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    return out


def _tokenizer_files(out: Path) -> None:
    """The tiny model's tokenizer files, so the synthetic checkpoint exports like a real one (the ids it
    produces are a subset of the synthetic vocabulary)."""
    import shutil
    import tempfile

    from standins.tiny import write_tiny

    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny(Path(tmp) / "tiny", text_only=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
            shutil.copy2(tiny / name, out / name)
