"""`matslice export` and `matslice verify` as users run them, on the tiny text-only checkpoint: the bundle checks
out, bad input is one `error:` line, and a killed export leaves no bundle behind."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from helpers import MATSLICE, kill_when, partials


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*MATSLICE, *map(str, args)], capture_output=True, text=True, timeout=900)


def test_export_then_verify(tiny_text, tmp_path):
    """With a tensor limit of 8 KiB the LM head, FFN weights and tables are split; verify still holds to 1e-4 in fp32
    and exactly in q4 (against the split weights read back whole)."""
    out = tmp_path / "bundle"
    done = run("export", tiny_text, out, "--dtype", "fp32,q4", "--max-tensor-bytes", "8KiB")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"onnx/decoder_model_merged.onnx", "onnx/decoder_model_merged_q4.onnx"} <= set(manifest["files"])
    done = run("verify", out, tiny_text, "--json")
    assert done.returncode == 0, done.stderr
    reports = json.loads(done.stdout)
    report = reports["fp32"]
    assert report["passed"] and report["max_abs_logits_diff"] <= 1e-4 and report["ids_match"]
    assert len(report["per_step"]) > 16  # 13 prompt tokens + 24 steps: past the 16-token sliding window
    q4 = reports["q4"]  # against PyTorch running the q4 graphs' own dequantized weights
    assert q4["passed"] and q4["max_abs_logits_diff"] <= 1e-4 and q4["ids_match"]
    assert "dequantized" in q4["reference"]
    # The limit holds for every weight of every graph; only the traced rotary tables cannot be split.
    import onnx

    sizes = {}
    for graph in (out / "onnx").glob("*.onnx"):
        for tensor in onnx.load(graph, load_external_data=False).graph.initializer:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            sizes[graph.name, tensor.name] = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    assert len(sizes) > 100
    over = {key: size for key, size in sizes.items() if size > 8192}
    assert over and all(name.startswith("rotary.") and size == 256 * 16 * 4 for (_, name), size in over.items()), over
    assert manifest["largest_tensor"]["bytes"] == max(sizes.values())


@pytest.mark.parametrize("args,fragment", [
    (("--dtype", "q3"), "unknown dtype 'q3'"),
    (("--modalities", "text,audio"), "no audio tower"),
    (("--block-size", "24"), "power of two"),
    (("--max-tensor-bytes", "2GB"), "at most --max-file-size"),
    (("--max-tensor-bytes", "lots"), "is not understood"),
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


def test_corrupt_safetensors_header_is_one_error_line(tiny_text, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_text, broken)
    data = bytearray((broken / "model.safetensors").read_bytes())
    data[8:40] = b"{ this is not json at all ......"
    (broken / "model.safetensors").write_bytes(bytes(data))
    for command in (("export", broken, tmp_path / "b"), ("slice", broken, tmp_path / "c", "--layers-to-skip", "1")):
        done = run(*command)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: shard ") and "corrupt" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_killed_export_leaves_no_bundle(tiny_text, tmp_path):
    """kill -9 once the session files are being written: no bundle under OUT for a later run or a page to take."""
    out = tmp_path / "bundle"

    def writing() -> bool:
        return any(p.glob("onnx/*.onnx*") for p in partials(tmp_path))

    assert kill_when(["export", str(tiny_text), str(out), "--dtype", "fp32,q4"], writing)
    assert not out.exists() and partials(tmp_path)
