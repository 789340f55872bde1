"""`matslice eval` measures what it says: checked against perplexities computed directly in torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluation.compare import evaluate, windows
from evaluation.data import TEXT, read_wav
from gemma3n.config import load_config
from gemma3n.errors import UserError
from slicer.checkpoint import slice_checkpoint
from slicer.plan import SliceSpec, make_plan


@pytest.fixture(scope="module")
def text_child(tiny_text, tmp_path_factory):
    plan = make_plan(load_config(tiny_text), SliceSpec(layers_to_skip=(6,), ffn_dims=(48,)))
    return slice_checkpoint(tiny_text, tmp_path_factory.mktemp("eval") / "child", plan, progress=False)


def _direct_perplexity(folder, window: int) -> float:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    nll, count = 0.0, 0
    for chunk in windows(ids, tokenizer.bos_token_id, window):
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(chunk)[None]).logits[0, :-1]
        nll += torch.nn.functional.cross_entropy(logits, torch.from_numpy(chunk[1:]), reduction="sum").item()
        count += len(chunk) - 1
    return math.exp(nll / count)


def test_self_comparison_is_perfect(tiny_text):
    result = evaluate(tiny_text, tiny_text, window=64)
    text = result["text"]
    assert text["kl_mean"] == pytest.approx(0, abs=1e-9) and text["top1_agreement"] == 1.0
    assert text["positions"] == result["tokens"]
    assert text["parent_perplexity"] == pytest.approx(_direct_perplexity(tiny_text, 64), rel=1e-5)


def test_slice_costs_are_measured(tiny_text, text_child):
    text = evaluate(text_child, tiny_text, window=64)["text"]
    assert text["variant_perplexity"] == pytest.approx(_direct_perplexity(text_child, 64), rel=1e-5)
    assert text["kl_mean"] > 1e-4 and text["top1_agreement"] < 1.0


def test_audio_cosine_on_speech(tiny_multimodal, tmp_path):
    plan = make_plan(load_config(tiny_multimodal), SliceSpec(audio_layers_to_skip=(1,)))
    child = slice_checkpoint(tiny_multimodal, tmp_path / "child", plan, progress=False)
    rng = np.random.default_rng(0)
    clips = [np.sin(np.linspace(0, 300 * np.pi, 12000)).astype(np.float32) + 0.01 * rng.standard_normal(12000)
             .astype(np.float32)]
    same = evaluate(tiny_multimodal, tiny_multimodal, text=TEXT[:200], clips=clips, window=64)["audio"]
    cut = evaluate(child, tiny_multimodal, text=TEXT[:200], clips=clips, window=64)["audio"]
    assert same["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert cut["cosine_mean"] < 0.999


def test_cli_json_and_bad_input(tiny_text, text_child, tmp_path):
    done = subprocess.run([sys.executable, "-m", "matslice", "eval", str(text_child), str(tiny_text), "--json",
                           "--window", "64", "--no-audio"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["text"]) >= {"parent_perplexity", "variant_perplexity", "kl_mean",
                                                     "top1_agreement"}
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not a wav")
    with pytest.raises(UserError, match="not a readable PCM WAV"):
        read_wav(bad)
    done = subprocess.run([sys.executable, "-m", "matslice", "eval", str(tmp_path / "nope"), str(tiny_text)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: ")


def test_default_model_and_its_nested_slice():
    """With no folders, eval compares the embedded default model with its E2B-like MatFormer slice."""
    done = subprocess.run([sys.executable, "-m", "matslice", "eval", "--json", "--no-audio", "--window", "64"],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["variant"].endswith("-e2b-like")
    text = result["text"]
    assert text["kl_mean"] > 0 and 0.5 < text["top1_agreement"] < 1.0
    assert text["parent_perplexity"] < text["variant_perplexity"]
    one = subprocess.run([sys.executable, "-m", "matslice", "eval", result["parent"]], capture_output=True, text=True)
    assert one.returncode == 2 and "give both VARIANT and PARENT" in one.stderr
