"""`matslice verify` asserts every dtype it reports: fp32 and q4 exactly, fp16, q4f16 and q8 within the KL and
top-1 thresholds the README states. Each is run on a real bundle of the tiny multimodal checkpoint (every
session, audio and vision included), and a bundle that does not match its checkpoint fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_plan_exact

from evaluation.parity import TOLERANCES, check_parity
from web_export.bundle import write_bundle

DTYPES = ("fp16", "q4f16", "q8")


@pytest.fixture(scope="module")
def bundle(tiny_multimodal: Path, tiny_multimodal_graphs: list, tmp_path_factory) -> Path:
    return write_bundle(tiny_multimodal, tmp_path_factory.mktemp("verify") / "bundle", dtypes=DTYPES,
                        graphs=tiny_multimodal_graphs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lossy_dtypes_pass_their_thresholds(tiny_multimodal: Path, bundle: Path, dtype: str) -> None:
    report = check_parity(tiny_multimodal, bundle, dtype)
    tol = TOLERANCES[dtype]
    print(f"\n{dtype}: KL {report.kl_mean:.2e}, top-1 {report.top1:.3f} over {report.positions} positions, "
          f"max |diff| {report.max_logits_diff:.2e}, encoders {report.encoder_max_diff}")
    assert report.positions > 250  # an image, an audio clip and text, then 24 cached steps
    assert report.kl_mean <= tol.max_kl and report.top1 >= tol.min_top1 and report.passed
    assert set(report.encoder_max_diff) == {"audio_encoder", "vision_encoder"}


def test_bundle_holds_what_the_plan_predicts(tiny_multimodal: Path, bundle: Path) -> None:
    assert_plan_exact(bundle / "onnx", tiny_multimodal, DTYPES)  # the other dtypes: tests/web_export/test_bundle.py


def test_a_bundle_of_another_checkpoint_fails(tiny_multimodal: Path, bundle: Path, tmp_path: Path) -> None:
    from standins.tiny import write_tiny

    other = write_tiny(tmp_path / "other", seed=1)
    report = check_parity(other, bundle, "fp16", steps=4)
    assert not report.passed and report.kl_mean > TOLERANCES["fp16"].max_kl


def test_q4_with_64_weight_blocks_is_exact_and_predicted(tiny_text: Path, tiny_text_graphs: list,
                                                         tmp_path: Path) -> None:
    """`--block-size 64` (the README's way to E2B text under 1.3 GB) verifies exactly and is what plan predicts."""
    coarse = write_bundle(tiny_text, tmp_path / "block64", dtypes=("q4",), block_size=64, graphs=tiny_text_graphs)
    report = check_parity(tiny_text, coarse, "q4")
    assert report.passed and report.max_logits_diff <= TOLERANCES["q4"].max_logits_diff, report
    assert_plan_exact(coarse / "onnx", tiny_text, ("q4",), block_size=64)
    fine = write_bundle(tiny_text, tmp_path / "block32", dtypes=("q4",), block_size=32, graphs=tiny_text_graphs)
    assert _onnx_bytes(coarse) < _onnx_bytes(fine)


def _onnx_bytes(bundle: Path) -> int:
    return sum(f.stat().st_size for f in (bundle / "onnx").iterdir())
