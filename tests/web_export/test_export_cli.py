"""`matslice export` and `matslice verify` as users run them, on the tiny text-only checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MATSLICE = [sys.executable, "-m", "slicer.cli"]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*MATSLICE, *map(str, args)], capture_output=True, text=True, timeout=900)


def test_export_then_verify(tiny_text, tmp_path):
    out = tmp_path / "bundle"
    done = run("export", tiny_text, out, "--dtype", "fp32,q4")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"onnx/decoder_model_merged.onnx", "onnx/decoder_model_merged_q4.onnx"} <= set(manifest["files"])
    done = run("verify", out, tiny_text, "--json")
    assert done.returncode == 0, done.stderr
    reports = json.loads(done.stdout)
    report = reports["fp32"]
    assert report["max_abs_logits_diff"] <= 1e-4 and report["ids_match"] and len(report["per_step"]) > 16
    q4 = reports["q4"]  # against PyTorch running the q4 graphs' own dequantized weights
    assert q4["asserted"] and q4["max_abs_logits_diff"] <= 1e-4 and q4["ids_match"]


@pytest.mark.parametrize("args,fragment", [
    (("--dtype", "q3"), "unknown dtype 'q3'"),
    (("--modalities", "text,audio"), "no audio tower"),
    (("--block-size", "24"), "power of two"),
])
def test_bad_export_arguments(tiny_text, tmp_path, args, fragment):
    done = run("export", tiny_text, tmp_path / "b", *args)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and fragment in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_export_refuses_non_gemma_and_unwritable(tiny_text, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "bert"}')
    done = run("export", tmp_path / "m", tmp_path / "b")
    assert done.returncode == 2 and "not a Gemma 3n model" in done.stderr
    (tmp_path / "file").write_text("not a folder")
    done = run("export", tiny_text, tmp_path / "file" / "b")
    assert done.returncode == 2 and "cannot write under" in done.stderr
