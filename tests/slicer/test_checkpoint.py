"""A slice is exact: the child loads in stock transformers and computes what the parent computes with
the same layers skipped and units removed. The reference is built from the parent model in memory with
plain torch (identity layers, narrowed Linear weights, zeroed audio units), independently of the
slicer's byte-level cutting."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MATSLICE, kill_when, partials
from torch import nn
from transformers import AutoModelForCausalLM, Gemma3nForConditionalGeneration

from gemma3n.config import load_config
from slicer.checkpoint import slice_checkpoint
from slicer.plan import SliceSpec, make_plan

SKIP = (1, 6)  # an own-KV layer and a KV-sharing layer of the 8-layer tiny model
WIDTHS = (96, 64, 64, 32, 64, 48)  # per kept layer, each at most the parent's width


class _Identity(nn.Module):
    """A skipped decoder layer: the AltUp-stacked hidden states pass through unchanged."""

    def __init__(self, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def _narrow(linear: nn.Linear, rows: int | None = None, cols: int | None = None) -> None:
    weight = linear.weight.data
    linear.weight = nn.Parameter(weight[:rows] if rows else weight[:, :cols])


def _reference(model, plan, text_model) -> None:
    """Apply the plan to an in-memory parent with torch alone."""
    layers = text_model.layers
    for i in range(len(layers)):
        if i not in plan.kept_layers:
            layers[i] = _Identity(i)
    for position, i in enumerate(plan.kept_layers):
        mlp, width = layers[i].mlp, plan.ffn_dims[position]
        _narrow(mlp.gate_proj, rows=width)
        _narrow(mlp.up_proj, rows=width)
        _narrow(mlp.down_proj, cols=width)
        mlp.intermediate_size = width
    if plan.kept_audio_blocks is not None:
        audio = model.model.audio_tower
        audio.conformer = nn.ModuleList([audio.conformer[j] for j in plan.kept_audio_blocks])
        if plan.audio_ffn_dim:
            for block in audio.conformer:
                for ffw in (block.ffw_layer_start, block.ffw_layer_end):
                    w1, w2 = ffw.ffw_layer_1.weight.data, ffw.ffw_layer_2.weight.data
                    score = w1.double().norm(dim=1) * w2.double().norm(dim=0)
                    drop = torch.argsort(score, descending=True, stable=True)[plan.audio_ffn_dim:]
                    w1[drop] = 0
                    w2[:, drop] = 0


def _load(cls, folder: Path):
    model, info = cls.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
    assert info["missing_keys"] == [] or info["missing_keys"] == set()
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(key), f"{key}: {info.get(key)}"
    return model.eval()


def _multimodal_inputs(folder: Path) -> dict:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    rng = np.random.default_rng(0)
    audio = (0.3 * np.sin(np.linspace(0, 400 * np.pi, 8000)) + 0.01 * rng.standard_normal(8000)).astype(np.float32)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": "hi there"}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def multimodal_slice(tiny_multimodal, tmp_path_factory):
    spec = SliceSpec(layers_to_skip=SKIP, ffn_dims=WIDTHS, audio_layers_to_skip=(0,), audio_ffn_dim=40)
    plan = make_plan(load_config(tiny_multimodal), spec)
    out = tmp_path_factory.mktemp("slice") / "child"
    slice_checkpoint(tiny_multimodal, out, plan, max_shard_bytes=1 << 20, progress=False)
    return plan, out


def test_multimodal_child_equals_parent_with_units_removed(tiny_multimodal, multimodal_slice):
    plan, out = multimodal_slice
    child = _load(Gemma3nForConditionalGeneration, out)
    inputs = _multimodal_inputs(tiny_multimodal)
    assert (inputs["input_ids"] == 273).sum() > 0, "the prompt must carry audio soft tokens"
    parent = _load(Gemma3nForConditionalGeneration, tiny_multimodal)
    with torch.no_grad():
        untouched = parent(**inputs).logits
        _reference(parent, plan, parent.model.language_model)
        expected = parent(**inputs).logits
        got = child(**inputs).logits
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() <= 1e-5
    assert (got - untouched).abs().max().item() > 1e-3, "the slice must change the model"


def test_multimodal_child_config_and_files(multimodal_slice):
    plan, out = multimodal_slice
    config = json.loads((out / "config.json").read_text())
    text = config["text_config"]
    assert text["num_hidden_layers"] == 6
    assert text["num_kv_shared_layers"] == 2  # one of the three KV-sharing layers was skipped
    assert text["intermediate_size"] == list(WIDTHS)
    assert text["layer_types"] == ["sliding_attention"] * 3 + ["full_attention"] + ["sliding_attention"] * 2
    assert text["activation_sparsity_pattern"] == [0.95, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert config["audio_config"]["conf_num_hidden_layers"] == 1
    assert config["matslice"]["audio"] == {"kept_blocks": [1], "ffn_dim": 40}
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors.index.json" in names and sum(n.endswith(".safetensors") for n in names) > 1
    assert {"tokenizer.json", "chat_template.jinja", "README.md", "generation_config.json"} <= names
    assert not [p for p in out.parent.iterdir() if "partial" in p.name]


def test_slicing_is_deterministic(tiny_multimodal, multimodal_slice, tmp_path):
    plan, out = multimodal_slice
    again = slice_checkpoint(tiny_multimodal, tmp_path / "again", plan, max_shard_bytes=1 << 20, progress=False)
    assert _sha(again) == _sha(out)


def test_text_only_child_from_multimodal_parent(tiny_multimodal, tmp_path):
    plan = make_plan(load_config(tiny_multimodal), SliceSpec(layers_to_skip=SKIP, ffn_dims=(64,),
                                                             modalities=("text",)))
    out = slice_checkpoint(tiny_multimodal, tmp_path / "text", plan, progress=False)
    child = _load(AutoModelForCausalLM, out)
    assert type(child).__name__ == "Gemma3nForCausalLM"
    parent = _load(Gemma3nForConditionalGeneration, tiny_multimodal)
    ids = torch.tensor([[2, 40, 50, 60, 70, 80, 90, 100, 110, 120, 41, 42, 43, 44, 45, 46, 47, 48]])
    with torch.no_grad():
        _reference(parent, plan, parent.model.language_model)
        expected = parent(input_ids=ids).logits
        got = child(input_ids=ids).logits
    assert (got - expected).abs().max().item() <= 1e-5
    assert not (out / "preprocessor_config.json").exists()


def test_text_only_parent(tiny_text, tmp_path):
    plan = make_plan(load_config(tiny_text), SliceSpec(layers_to_skip=(5, 6, 7), ffn_dims=(32,)))
    out = slice_checkpoint(tiny_text, tmp_path / "child", plan, progress=False)
    child = _load(AutoModelForCausalLM, out)
    parent = _load(AutoModelForCausalLM, tiny_text)
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        _reference(parent, plan, parent.model)
        expected = parent(input_ids=ids).logits
        got = child(input_ids=ids).logits
    assert (got - expected).abs().max().item() <= 1e-5
    assert json.loads((out / "config.json").read_text())["num_kv_shared_layers"] == 0


@pytest.mark.parametrize("refused", [("copy_file_range",), ("copy_file_range", "sendfile")])
def test_slicing_where_the_kernel_will_not_copy(tiny_multimodal, multimodal_slice, tmp_path, monkeypatch, refused):
    """A model on one disk, OUT on another: an older kernel's copy_file_range refuses (EXDEV), and so may sendfile
    on some filesystems. Each refusal is made to happen here, to /dev/shm when it is another filesystem: the copy
    falls back to the next way (counted, so the test fails if the fallback did not run) without changing a byte."""
    import errno
    import os

    other = Path("/dev/shm")
    on_other = other.is_dir() and other.stat().st_dev != tiny_multimodal.stat().st_dev
    calls = {"copy_file_range": 0, "sendfile": 0, "pread": 0}
    for name in calls:
        real = getattr(os, name)

        def counted(*args, _name=name, _real=real):
            calls[_name] += 1
            if _name in refused:
                raise OSError(errno.EXDEV, f"{_name} refused, as by an older kernel across file systems")
            return _real(*args)

        monkeypatch.setattr(os, name, counted)
    plan, out = multimodal_slice
    target = Path(tempfile.mkdtemp(dir=other if on_other else tmp_path)) / "child"
    try:
        slice_checkpoint(tiny_multimodal, target, plan, max_shard_bytes=1 << 20, progress=False)
        assert _sha(target) == _sha(out)
    finally:
        shutil.rmtree(target.parent)
    fallback = "pread" if "sendfile" in refused else "sendfile"
    assert calls["copy_file_range"] > 0 and calls[fallback] > 0, calls  # every tensor run went the fallback way
    assert calls["pread"] == 0 or fallback == "pread", calls


def test_killed_slice_leaves_no_child(tiny_multimodal, tmp_path):
    """kill -9 while shards are being written: OUT does not exist, and the next slice removes the leftovers."""
    out = tmp_path / "child"

    def writing() -> bool:
        return any(p.glob("*.safetensors") for p in partials(tmp_path))

    args = ["slice", str(tiny_multimodal), str(out), "--layers-to-skip", "6", "--max-shard-size", "1MB"]
    assert kill_when(args, writing), "the slice finished before it could be killed"
    assert not out.exists() and partials(tmp_path)
    done = subprocess.run([*MATSLICE, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "config.json").is_file() and not partials(tmp_path)
