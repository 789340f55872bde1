"""The tiny checkpoint must behave like a real Gemma 3n folder, since every slicer/export test builds on it.

Real transformers models and processors throughout: a fixture that loads with missing keys or a processor
that miscounts soft tokens would make every downstream test meaningless.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CHECKPOINT_FILES, TEXT_CHECKPOINT_FILES
from PIL import Image
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import (
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    Gemma3nForCausalLM,
    Gemma3nForConditionalGeneration,
)

from standins.tiny import (
    AUDIO_SOFT_TOKENS,
    PER_LAYER_VOCAB_SIZE,
    SPECIAL_TOKENS,
    VISION_SOFT_TOKENS,
    tiny_config,
    write_tiny,
)


@pytest.fixture
def mm_dir(tiny_multimodal: Path) -> Path:
    """The session's seed-0 multimodal folder (tests/conftest.py): writing 66 MB once is the slow part."""
    return tiny_multimodal


@pytest.fixture
def text_dir(tiny_text: Path) -> Path:
    """The session's seed-0 text-only folder (tests/conftest.py)."""
    return tiny_text


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file write_tiny writes (not of files other tests may have added to a shared folder)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name in CHECKPOINT_FILES}


def _assert_subset(expected: object, actual: object, where: str = "config") -> None:
    """Every value tiny_config promises must reach config.json unchanged (lists stay lists, floats floats)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} missing"
            _assert_subset(value, actual[key], f"{where}.{key}")
    else:
        assert actual == expected and type(actual) is type(expected), f"{where}: {actual!r} != {expected!r}"


def _prompt_parts(seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A small random RGB image and a 0.5 s 440 Hz sine at 16 kHz (well under the 1.3 s the 8 tokens hold)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    t = np.arange(8000, dtype=np.float32) / 16000
    return Image.fromarray(pixels), (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _chat_inputs(processor, image: Image.Image, audio: np.ndarray) -> dict[str, torch.Tensor]:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "audio", "audio": audio},
                {"type": "text", "text": "What is in the picture and the sound?"},
            ],
        }
    ]
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def test_files_and_config(mm_dir: Path, text_dir: Path) -> None:
    # Subsets, not equality: the folders are session-wide and other tests may add files beside them.
    assert {p.name for p in mm_dir.iterdir()} >= CHECKPOINT_FILES
    text_files = {p.name for p in text_dir.iterdir()}
    assert text_files >= TEXT_CHECKPOINT_FILES and not text_files & (CHECKPOINT_FILES - TEXT_CHECKPOINT_FILES)
    mm = json.loads((mm_dir / "config.json").read_text())
    text = json.loads((text_dir / "config.json").read_text())
    _assert_subset(tiny_config(), mm)
    _assert_subset(tiny_config(text_only=True), text)
    assert tiny_config(vision=False) == tiny_config(text_only=True)
    assert mm["model_type"] == "gemma3n" and mm["architectures"] == ["Gemma3nForConditionalGeneration"]
    assert text["model_type"] == "gemma3n_text" and text["architectures"] == ["Gemma3nForCausalLM"]
    tc = mm["text_config"]
    # KV sharing: layers 5-7 reuse; the store layers 3 (sliding) and 4 (full) exist before them.
    assert tc["layer_types"][3:5] == ["sliding_attention", "full_attention"]
    assert tc["activation_sparsity_pattern"][:3] == [0.95, 0.95, 0.0]
    weights = load_file(mm_dir / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())


def test_token_layout_is_consistent(mm_dir: Path) -> None:
    config = json.loads((mm_dir / "config.json").read_text())
    text, audio, vision = config["text_config"], config["audio_config"], config["vision_config"]
    tokenizer = AutoTokenizer.from_pretrained(mm_dir)
    assert len(tokenizer) == text["vocab_size"] == audio["vocab_offset"] + audio["vocab_size"]
    assert vision["vocab_offset"] + vision["vocab_size"] == audio["vocab_offset"]
    assert text["vocab_size_per_layer_input"] == vision["vocab_offset"] == PER_LAYER_VOCAB_SIZE
    for name in ("boi", "eoi", "image", "boa", "eoa", "audio"):
        assert getattr(tokenizer, f"{name}_token_id") == config[f"{name}_token_id"], name
    assert config["boi_token_id"] < vision["vocab_offset"] <= config["image_token_id"] < audio["vocab_offset"]
    assert config["boa_token_id"] < vision["vocab_offset"] and config["audio_token_id"] >= audio["vocab_offset"]
    for token, token_id in SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    # Ordinary text never lands in the multimodal ranges, where per-layer embeddings do not reach.
    ids = tokenizer("Hello, the singing cat!\nIt's 42 ~ {ok}").input_ids
    assert ids[0] == tokenizer.bos_token_id and max(ids) < PER_LAYER_VOCAB_SIZE
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello, the singing cat!\nIt's 42 ~ {ok}"
    # tokenizer.json alone (what transformers.js runs) must tokenize exactly as transformers does.
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi there"}], tokenize=False)
    assert chat == "<bos><start_of_turn>user\nhi there<end_of_turn>\n"
    raw = Tokenizer.from_file(str(mm_dir / "tokenizer.json"))
    assert raw.encode(chat, add_special_tokens=False).ids == tokenizer(chat, add_special_tokens=False).input_ids


def test_processor_files_match_the_model(mm_dir: Path) -> None:
    processor = json.loads((mm_dir / "processor_config.json").read_text())
    assert processor["audio_seq_length"] == AUDIO_SOFT_TOKENS and processor["image_seq_length"] == VISION_SOFT_TOKENS
    flat = json.loads((mm_dir / "preprocessor_config.json").read_text())
    assert flat["processor_class"] == "Gemma3nProcessor"
    assert flat["feature_extractor_type"] == "Gemma3nAudioFeatureExtractor"
    assert flat["image_processor_type"] == "SiglipImageProcessor"
    tokenizer_config = json.loads((mm_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["audio_token"] == "<audio_soft_token>"
    assert tokenizer_config["image_token"] == "<image_soft_token>"


def test_multimodal_loads_and_runs_image_and_audio(mm_dir: Path) -> None:
    model, info = Gemma3nForConditionalGeneration.from_pretrained(mm_dir, output_loading_info=True)
    assert all(not keys for keys in info.values()), info
    processor = AutoProcessor.from_pretrained(mm_dir)
    image, audio = _prompt_parts()
    inputs = _chat_inputs(processor, image, audio)
    ids = inputs["input_ids"][0]
    assert int((ids == model.config.image_token_id).sum()) == model.config.vision_soft_tokens_per_image
    assert int((ids == model.config.audio_token_id).sum()) == model.config.audio_soft_tokens_per_image
    assert inputs["input_features"].shape[-1] == model.config.audio_config.input_feat_size
    with torch.no_grad():
        logits = model.eval()(**inputs).logits
        other = model(**_chat_inputs(processor, _prompt_parts(seed=1)[0], audio)).logits
    assert logits.shape == (1, ids.shape[0], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    assert not torch.equal(logits[0, -1], other[0, -1]), "the image does not reach the decoder"


def test_text_only_loads_and_generates(text_dir: Path) -> None:
    model, info = AutoModelForCausalLM.from_pretrained(text_dir, output_loading_info=True)
    assert isinstance(model, Gemma3nForCausalLM)
    assert all(not keys for keys in info.values()), info
    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hi."}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    out = model.eval().generate(**inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert new.shape == (4,) and int(new.max()) < model.config.vocab_size


def test_same_seed_same_bytes_other_seed_other_weights(mm_dir: Path, tmp_path: Path) -> None:
    again = write_tiny(tmp_path / "again", seed=0)
    assert {p.name for p in again.iterdir()} == CHECKPOINT_FILES
    assert _hashes(again) == _hashes(mm_dir)
    other = write_tiny(tmp_path / "other", seed=1)
    first, second = load_file(mm_dir / "model.safetensors"), load_file(other / "model.safetensors")
    assert first.keys() == second.keys()
    changed = {key for key in first if not torch.equal(first[key], second[key])}
    for tower in ("model.vision_tower.", "model.audio_tower.", "model.language_model."):
        assert any(key.startswith(tower) for key in changed), f"seed does not reach {tower}"
    assert _hashes(other)["tokenizer.json"] == _hashes(mm_dir)["tokenizer.json"]


def test_without_timm_falls_back_to_text_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError, as if not installed
    folder = write_tiny(tmp_path / "no_timm")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "gemma3n_text"
    assert {p.name for p in folder.iterdir()} == TEXT_CHECKPOINT_FILES
    lines = [line for line in capsys.readouterr().err.splitlines() if "timm" in line]
    assert len(lines) == 1 and "text-only" in lines[0] and "pip install timm torchvision" in lines[0]
