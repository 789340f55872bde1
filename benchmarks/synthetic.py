"""Synthetic full-size Gemma 3n checkpoints: real tensor shapes, cheap deterministic bytes.

The benchmarks need E4B's real shapes (35 layers of 2048 x 16384 FFNs, the per-layer embedding table)
but no real weights. Bytes come from one seeded 16 MiB block written again and again, so a 10 GB
checkpoint is written at disk speed and is the same every time.

Those bytes saturate the final logit softcap (every logit is 30, every greedy id 0), so ids compared on
them prove nothing. `spread=True` writes weights scaled like a trained model's instead (linear weights
N(0, 1/fan_in), embeddings N(0, 1/hidden) so that the scaled lookups have unit RMS, norms near 1 but the
post-branch norms near 4 and the q/k norms near head_dim^-1/4, small AltUp coefficients): logits then spread
over a few units and greedy ids vary. Written at ~100M values/s.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from gemma3n.config import e4b_json, parse_config
from gemma3n.safetensors import OutTensor, ShardWriter
from gemma3n.shapes import text_shapes
from slicer.plan import make_plan
from slicer.presets import get_preset

BLOCK = 16 << 20
BRANCH_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm", "post_per_layer_input_norm")


def synthetic_text_config(vocab_divisor: int = 4) -> dict:
    """E4B's text decoder as a gemma3n_text config, with the two vocabularies divided by `vocab_divisor`."""
    text = e4b_json()["text_config"]
    text["vocab_size"] //= vocab_divisor
    text["vocab_size_per_layer_input"] //= vocab_divisor
    return text | {"model_type": "gemma3n_text", "architectures": ["Gemma3nForCausalLM"], "dtype": "bfloat16"}


def full_vocab_small_config(vocab_divisor: int = 1) -> dict:
    """Gemma 3n's real vocabularies (262400 / 262144 rows: the lookups, LM head, logits and tokenizer ids at
    full size) around a small decoder (hidden 256, 4 layers of which 2 share KV, per-layer dim 64, FFN 1024):
    the browser test's full-vocabulary case, ~85 MB at q4, exported in about a minute."""
    text = synthetic_text_config(vocab_divisor)
    text.update(hidden_size=256, num_hidden_layers=4, intermediate_size=[1024] * 4, hidden_size_per_layer_input=64,
                num_attention_heads=2, num_key_value_heads=1, head_dim=128, laurel_rank=32,
                layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                num_kv_shared_layers=2, activation_sparsity_pattern=[0.95, 0.95, 0.0, 0.0])
    return text


def write_synthetic(out: Path, config: dict, max_shard_bytes: int = 4 << 30, seed: int = 0,
                    tokenizer: tuple[dict, dict] | None = None, spread: bool = False) -> Path:
    """Write a bfloat16 checkpoint of `config`'s text shapes to `out` (sharded like Google's), with the tiny
    model's tokenizer files, or `tokenizer` (tokenizer.json and tokenizer_config.json contents) when given;
    `spread`: trained-model-like value scales, so logits are not saturated (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(seed).integers(0, 256, BLOCK, dtype=np.uint8)
    block[1::2] &= 0x3F  # keep bfloat16 exponents small: finite, modest values
    text = parse_config(config, str(out)).text
    tensors = [OutTensor(name, "BF16", shape) for name, shape in sorted(text_shapes(text, "model.").items())]
    writer = ShardWriter(out, tensors, max_shard_bytes)
    pool = _Pool(seed) if spread else None
    for tensor in tensors:
        writer.begin(tensor.name)
        if pool is not None:
            for chunk in pool.tensor(tensor.name, tensor.shape, _scale(tensor.name, tensor.shape, config)):
                writer.write(chunk)
            continue
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


def _scale(name: str, shape: tuple[int, ...], config: dict) -> tuple[float, float]:
    """(mean, std) of a tensor's values, like a trained Gemma 3n's orders of magnitude."""
    if len(shape) == 1 and ("self_attn.q_norm" in name or "self_attn.k_norm" in name):
        # Gemma 3n attends with scaling 1 after RMS-normalizing q and k: unit weights give q.k ~ N(0, head_dim),
        # a near one-hot softmax that amplifies every rounding difference layer by layer (a 30-layer E2B then
        # gives different ids on any two runtimes); head_dim^-1/4 makes q.k ~ N(0, 1), like a trained model.
        return config["head_dim"] ** -0.25, 0.01
    if len(shape) == 1 and any(k in name for k in BRANCH_NORMS):
        return 4.0, 0.2  # branch outputs outweigh the residual embedding: else greedy copies the last token
    if len(shape) == 1:  # RMSNorm weights (Gemma 3n multiplies by w, not 1 + w), AltUp output scale
        return 1.0, 0.05
    if "altup.correction_coefs" in name or "altup.prediction_coefs" in name:
        return 0.0, 0.1
    if name.endswith("embed_tokens.weight"):  # scaled by sqrt(hidden) on lookup, tied to the LM head
        return 0.0, config["hidden_size"] ** -0.5
    if name.endswith("embed_tokens_per_layer.weight"):  # scaled by sqrt(per-layer dim) on lookup
        return 0.0, config["hidden_size_per_layer_input"] ** -0.5
    return 0.0, shape[1] ** -0.5  # a Linear's [out, in] weight


class _Pool:
    """Normal values for any tensor, fast: rows are windows at random offsets into one seeded pool of
    N(0, 1) values, each row times its own random factor in [0.75, 1.25] so no two rows are equal (an
    exact tie in the LM head would make greedy ids depend on argmax tie-breaking)."""

    SIZE = 1 << 25

    def __init__(self, seed: int) -> None:
        self.values = np.random.default_rng(seed).standard_normal(self.SIZE, dtype=np.float32)
        self.seed = seed

    def tensor(self, name: str, shape: tuple[int, ...], scale: tuple[float, float]):
        import zlib

        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        mean, std = scale
        cols = shape[-1]
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        step = max(1, BLOCK // (4 * cols))
        span = np.arange(cols, dtype=np.int64)
        for start in range(0, rows, step):
            count = min(step, rows - start)
            offsets = rng.integers(0, self.SIZE - cols, count)
            factors = rng.uniform(0.75, 1.25, count).astype(np.float32) * np.float32(std)
            values = self.values[offsets[:, None] + span] * factors[:, None] + np.float32(mean)
            yield np.ascontiguousarray(values.view(np.uint16)[:, 1::2])  # bfloat16: the high halves


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


def synthetic_preset(work: Path, preset: str, vocab_divisor: int) -> Path:
    """A synthetic checkpoint shaped like E4B sliced to `preset`, text only (written once, then reused)."""
    child = work / f"{preset}-v{vocab_divisor}"
    if not (child / "config.json").exists():
        spec = replace(get_preset(preset).spec(), modalities=("text",))
        parent = parse_config(synthetic_text_config(vocab_divisor), "synthetic E4B")
        write_synthetic(child, make_plan(parent, spec).child.to_json())
    return child
