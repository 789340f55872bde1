"""`--max-tensor-bytes`: MatMul weights and tables above the limit are split, in every dtype, into tensors that fit,
and the split sessions compute what the unsplit ones do.

The tiny text checkpoint is written twice per dtype from one trace: unsplit, and with a limit of a few kilobytes
that splits its LM head, FFN and attention weights by output rows and its tables by columns. q4 and q8 give the
very same logits (integer or per-row kernels); fp32 differs by float rounding at most, since onnxruntime's float
GEMM may accumulate a narrower output in another order; fp16 and q4f16 by fp16 rounding, since onnxruntime's CPU
runs some fp16 ops in fp32 and a Concat between them rounds to fp16 where the unsplit graph did not (so their greedy
ids may part at a near tie of the random model's logits, which the test then checks is one).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from evaluation.dequantized import quantized_tensors
from gemma3n.dtypes import DTYPES
from web_export.graph import tensor_bytes
from web_export.quantize import variant_name, write_variant
from web_export.runtime import BundleRuntime, Prompt

LIMITS = {"q8": 9216}  # q8 lookups quantize 32 columns of the 288-row table at a time: 9,216 bytes at least
LIMIT = 4608  # the others: the LM head, tables, FFN and attention weights all split
TOLERANCE = {"fp32": 1e-5, "fp16": 1e-2, "q4f16": 1e-2, "q8": 0.0, "q4": 0.0}
PROMPT = [2, 48, 77, 84, 84, 87, 118, 87, 90, 84, 76] * 3  # "<bos>Hello world" thrice: past the 16-token window
STEPS = 20


@pytest.fixture(scope="module")
def variants(tiny_text_graphs: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split")
    for dtype in DTYPES:
        for tag, limit in (("whole", None), ("split", LIMITS.get(dtype, LIMIT))):
            for graph in tiny_text_graphs:
                write_variant(graph, dtype, root / tag / variant_name(graph.name, dtype), max_tensor_bytes=limit)
    return root


def initializers(path: Path) -> dict[str, int]:
    return {t.name: tensor_bytes(t) for t in onnx.load(path, load_external_data=False).graph.initializer}


def weights(path: Path) -> dict[str, int]:
    """The initializers the limit applies to: all but the decoder's traced rotary tables, which no op reads by rows
    or columns and so cannot be split (16 kB here, 2 MB at Gemma 3n's full size)."""
    return {name: size for name, size in initializers(path).items() if not name.startswith("rotary.")}


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_tensor_fits_the_limit(variants: Path, dtype: str) -> None:
    limit = LIMITS.get(dtype, LIMIT)
    for session in ("embed_tokens", "decoder_model_merged"):
        whole = weights(variants / "whole" / variant_name(session, dtype))
        split = weights(variants / "split" / variant_name(session, dtype))
        assert max(whole.values()) > limit >= max(split.values())
        assert sum(whole.values()) <= sum(split.values())  # nothing dropped (q8: one scale for all parts)
    decoder = initializers(variants / "split" / variant_name("decoder_model_merged", dtype))
    assert any(name.startswith("lm_head.weight_part1") for name in decoder)  # the tied LM head, by rows


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_sessions_compute_the_unsplit_logits(variants: Path, dtype: str) -> None:
    runs = {tag: BundleRuntime.from_folder(variants / tag, DTYPES[dtype].suffix) for tag in ("whole", "split")}
    (want, want_ids), (got, got_ids) = (runs[tag].greedy(Prompt(np.array(PROMPT)), STEPS) for tag in runs)
    if TOLERANCE[dtype] == 0:
        assert got_ids == want_ids
    for a, b, want_id, got_id in zip(want, got, want_ids, got_ids, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=TOLERANCE[dtype])
        if got_id != want_id:  # rounding may flip a near tie of the random model; the runs part from here
            top2 = np.sort(a[-1])[-2:]
            assert top2[1] - top2[0] <= 2 * TOLERANCE[dtype], (got_id, want_id, top2)
            break


def test_dequantized_q4_weights_are_put_back_together(variants: Path) -> None:
    """`matslice verify`'s exact q4 reference reads the split weights back whole (evaluation/dequantized.py)."""
    for session in ("embed_tokens", "decoder_model_merged"):
        whole, split = (quantized_tensors(variants / tag / variant_name(session, "q4")) for tag in ("whole", "split"))

        def key(item: tuple) -> tuple:
            return item[0].__name__, item[1].shape, item[1].tobytes()

        assert sorted(map(key, whole)) == sorted(map(key, split))
        assert math.prod(max((t for _, t in split), key=np.size).shape) > LIMIT  # a split weight came back whole
