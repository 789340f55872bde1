"""The command line as users and scripts drive it: names, JSON keys, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MATSLICE = [sys.executable, "-m", "matslice"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MATSLICE, *map(str, args)], capture_output=True, text=True, timeout=300)


def assert_user_error(done: subprocess.CompletedProcess, fragment: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert fragment in lines[0]


def test_plan_json_on_a_checkpoint(tiny_multimodal):
    done = run("plan", tiny_multimodal, "--layers-to-skip", "6", "--ffn-dims", "2_0 * 3", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["kept_layers"] == [0, 1, 2, 3, 4, 5, 7]
    assert plan["text_config"]["intermediate_size"] == [60] * 7
    assert plan["text_config"]["num_kv_shared_layers"] == 2
    assert set(plan["text_config"]) >= {"num_hidden_layers", "layer_types", "activation_sparsity_pattern"}
    assert plan["audio_config"]["conf_num_hidden_layers"] == 2
    assert set(plan["params"]) >= {"total", "text", "effective", "effective_published"}
    assert plan["bytes_source"] == "parent safetensors headers"


def test_plan_bytes_match_the_written_checkpoint(tiny_multimodal, tmp_path):
    args = ("--layers-to-skip", "1,6", "--ffn-dims", "64", "--audio-ffn-dim", "64")
    planned = json.loads(run("plan", tiny_multimodal, *args, "--json").stdout)
    done = run("slice", tiny_multimodal, tmp_path / "out", *args)
    assert done.returncode == 0, done.stderr
    written = sum(p.stat().st_size for p in (tmp_path / "out").glob("*.safetensors"))
    header_bytes = 0
    for shard in (tmp_path / "out").glob("*.safetensors"):
        with shard.open("rb") as f:
            header_bytes += 8 + int.from_bytes(f.read(8), "little")
    assert planned["bytes"] == written - header_bytes


def test_presets_json():
    done = run("presets", "--json")
    rows = json.loads(done.stdout)
    assert len([r for r in rows if r["official"]]) == 16
    assert {r["name"] for r in rows} >= {"E2B", "E4B", "E0.55B"}


def test_tiny_text_only(tmp_path):
    done = run("tiny", tmp_path / "t", "--text-only", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "t" / "config.json").read_text())["model_type"] == "gemma3n_text"


@pytest.mark.parametrize("args,fragment", [
    (("--layers-to-skip", "3"), "stores the KV cache"),
    (("--layers-to-skip", "9"), "indices 0..7"),
    (("--layers-to-skip", "2,2"), "twice"),
    (("--ffn-dims", "4096"), "wider than parent layer"),
    (("--ffn-dims", "64.5"), "not a whole number"),
    (("--ffn-dims", "64,64"), "2 widths for 8 kept layers"),
    (("--preset", "E9B"), "unknown preset"),
    (("--modalities", "text,audio"), "without a vision tower"),
    (("--frobnicate",), "unrecognized arguments"),
])
def test_bad_slices_leave_nothing(tiny_multimodal, tmp_path, args, fragment):
    out = tmp_path / "child"
    assert_user_error(run("slice", tiny_multimodal, out, *args), fragment)
    assert list(tmp_path.iterdir()) == []


def test_not_gemma3n(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert_user_error(run("slice", tmp_path / "m", tmp_path / "out"), "not a Gemma 3n model")
    assert_user_error(run("plan", tmp_path / "nowhere"), "does not exist")
    assert not (tmp_path / "out").exists()


def _sharded_copy(parent: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "parent"
    done = run("slice", parent, copy, "--max-shard-size", "1MB")  # an identity slice, sharded
    assert done.returncode == 0, done.stderr
    return copy


def test_truncated_and_missing_shards(tiny_multimodal, tmp_path):
    parent = _sharded_copy(tiny_multimodal, tmp_path)
    shards = sorted(parent.glob("model-*.safetensors"))
    assert len(shards) > 2
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) // 2])
    assert_user_error(run("slice", parent, tmp_path / "out"), "truncated")
    shards[1].unlink()
    assert_user_error(run("slice", parent, tmp_path / "out"), "missing")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_existing_output_needs_overwrite(tiny_text, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert_user_error(run("slice", tiny_text, out, "--ffn-dims", "32"), "--overwrite")
    done = run("slice", tiny_text, out, "--ffn-dims", "32", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").is_file()


def test_identity_slice_keeps_every_tensor_byte(tiny_text, tmp_path):
    done = run("slice", tiny_text, tmp_path / "same")
    assert done.returncode == 0, done.stderr
    from safetensors.numpy import load_file

    before, after = load_file(tiny_text / "model.safetensors"), load_file(tmp_path / "same" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all((before[k] == after[k]).all() for k in before)
    shutil.rmtree(tmp_path / "same")
