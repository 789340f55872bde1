"""fp32 ONNX export of the tiny Gemma 3n checkpoints: session contract, parity, clean and reproducible files.

Parity is end to end, against the stock transformers model, with the sessions driven the way transformers.js
drives them (evaluation.parity): a prefill and 24 cached greedy steps, far past the 16-token sliding window,
so the mask-based window over a full-history cache, the KV-sharing layers and the modality merge all count.
The dynamo exporter is the slow part (on two cores about 30 s for the text sessions, 85 s with the
encoders), so each checkpoint is exported once per module; only the byte-identity check exports again, in a
fresh process with another string-hash seed. Running exports side by side was slower on two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import DynamicCache

from evaluation.parity import check_parity
from web_export.checkpoint import load_parts
from web_export.export import export_onnx
from web_export.runtime import BundleRuntime, position_ids

MAX_DIFF = 1e-4
DECODE_STEPS = 24
REPO_ROOT = Path(__file__).resolve().parents[2]
TEXT_SESSIONS = {"embed_tokens", "decoder_model_merged"}
ALL_SESSIONS = TEXT_SESSIONS | {"audio_encoder", "vision_encoder"}


@pytest.fixture(scope="module")
def text_onnx(tiny_text: Path, tiny_text_graphs: list, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx_text")
    return out, export_onnx(tiny_text, out, graphs=tiny_text_graphs)


@pytest.fixture(scope="module")
def multimodal_onnx(tiny_multimodal: Path, tiny_multimodal_graphs: list,
                    tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx_multimodal")
    return out, export_onnx(tiny_multimodal, out, graphs=tiny_multimodal_graphs)


def kv_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def test_multimodal_session_contract(multimodal_onnx: tuple[Path, dict]) -> None:
    """Names, dtypes and axes exactly as transformers.js's gemma3n code reads them."""
    out, result = multimodal_onnx
    sessions = result["sessions"]
    assert set(sessions) == ALL_SESSIONS
    for name in ALL_SESSIONS:
        assert (out / "onnx" / f"{name}.onnx").is_file()
        assert (out / "onnx" / f"{name}.onnx_data").is_file()

    embed = sessions["embed_tokens"]
    assert embed["inputs"] == {"input_ids": {"dtype": "int64", "shape": ["batch_size", "sequence_length"]}}
    assert embed["outputs"]["inputs_embeds"]["shape"] == ["batch_size", "sequence_length", 64]
    assert embed["outputs"]["per_layer_inputs"]["shape"] == ["batch_size", "sequence_length", 8, 16]

    decoder = sessions["decoder_model_merged"]
    # 8 layers, 3 KV-shared: only layers 0..4 own a cache and get past/present tensors.
    fixed = ["inputs_embeds", "per_layer_inputs", "attention_mask", "position_ids", "num_logits_to_keep"]
    assert list(decoder["inputs"]) == fixed + kv_names("past_key_values", 5)
    assert list(decoder["outputs"]) == ["logits"] + kv_names("present", 5)
    assert decoder["inputs"]["attention_mask"] == {
        "dtype": "int64",
        "shape": ["batch_size", "total_sequence_length"],
    }
    assert decoder["inputs"]["num_logits_to_keep"] == {"dtype": "int64", "shape": []}
    assert decoder["inputs"]["past_key_values.4.value"]["shape"] == [
        "batch_size",
        1,
        "past_sequence_length",
        32,
    ]
    assert decoder["outputs"]["present.0.key"]["shape"] == ["batch_size", 1, "total_sequence_length", 32]
    assert decoder["outputs"]["logits"]["shape"] == ["batch_size", "num_logits", 288]

    audio = sessions["audio_encoder"]
    assert audio["inputs"]["input_features"]["shape"] == ["batch_size", "num_frames", 128]
    assert audio["inputs"]["input_features_mask"] == {"dtype": "bool", "shape": ["batch_size", "num_frames"]}
    assert audio["outputs"]["audio_features"]["shape"] == ["batch_size", 8, 64]

    vision = sessions["vision_encoder"]
    assert vision["inputs"]["pixel_values"]["shape"] == ["batch_size", 3, 512, 512]
    assert vision["outputs"]["image_features"]["shape"] == ["batch_size", 256, 64]


def test_multimodal_parity(tiny_multimodal: Path, multimodal_onnx: tuple[Path, dict]) -> None:
    report = check_parity(tiny_multimodal, multimodal_onnx[0], steps=DECODE_STEPS)
    assert len(report.logits_max_diff) == DECODE_STEPS + 1
    assert report.max_logits_diff < MAX_DIFF, report.logits_max_diff
    assert report.onnx_ids == report.torch_ids
    assert set(report.encoder_max_diff) == {"audio_encoder", "vision_encoder"}
    assert max(report.encoder_max_diff.values()) < MAX_DIFF, report.encoder_max_diff


def test_text_only_exports_only_text_sessions(
    tiny_text: Path, text_onnx: tuple[Path, dict], multimodal_onnx: tuple[Path, dict]
) -> None:
    """Same decoder contract as the multimodal checkpoint, and no encoder files."""
    out, result = text_onnx
    assert set(result["sessions"]) == TEXT_SESSIONS
    decoder, multimodal_decoder = (
        r["sessions"]["decoder_model_merged"] for r in (result, multimodal_onnx[1])
    )
    assert (decoder["inputs"], decoder["outputs"]) == (
        multimodal_decoder["inputs"],
        multimodal_decoder["outputs"],
    )
    assert {p.name for p in (out / "onnx").iterdir()} == {
        f"{name}{suffix}" for name in TEXT_SESSIONS for suffix in (".onnx", ".onnx_data")
    }
    with pytest.raises(ValueError, match="text-only"):
        export_onnx(tiny_text, out / "unused", modalities={"audio"})
    assert not (out / "unused").exists()


def test_text_only_parity(tiny_text: Path, text_onnx: tuple[Path, dict]) -> None:
    report = check_parity(tiny_text, text_onnx[0], steps=DECODE_STEPS)
    assert len(report.torch_ids) == DECODE_STEPS + 1
    assert report.max_logits_diff < MAX_DIFF, report.logits_max_diff
    assert report.onnx_ids == report.torch_ids
    assert report.encoder_max_diff == {}


@torch.no_grad()
def test_left_padded_batch_and_logits_to_keep(tiny_text: Path, text_onnx: tuple[Path, dict]) -> None:
    """Batch 2 with one left-padded row, as transformers.js batches; compared on real tokens only."""
    parts = load_parts(tiny_text)
    runner = BundleRuntime.from_folder(text_onnx[0] / "onnx")
    input_ids = torch.randint(7, 250, (2, 20), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :5] = 0
    input_ids[1, :5] = 0
    positions = position_ids(attention_mask.numpy(), input_ids.shape[1])
    cache = DynamicCache()
    expected = parts.model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=torch.from_numpy(positions),
        cache=cache,
    ).logits.numpy()

    embeds, per_layer = runner.run("embed_tokens", {"input_ids": input_ids.numpy()}).values()
    feeds = {
        "inputs_embeds": embeds,
        "per_layer_inputs": per_layer,
        "attention_mask": attention_mask.numpy(),
        "position_ids": positions,
        "num_logits_to_keep": np.array(0, dtype=np.int64),
        **runner.empty_past(batch=2),
    }
    out = runner.run("decoder_model_merged", feeds)
    real = attention_mask.numpy().astype(bool)
    assert np.abs(out["logits"][real] - expected[real]).max() < MAX_DIFF

    last_three = runner.run(
        "decoder_model_merged", {**feeds, "num_logits_to_keep": np.array(3, dtype=np.int64)}
    )
    assert last_three["logits"].shape == (2, 3, expected.shape[-1])
    assert np.abs(last_three["logits"] - out["logits"][:, -3:]).max() == 0.0

    step_ids = expected[:, -1].argmax(-1)[:, None]
    step_mask = torch.cat([attention_mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
    step_positions = position_ids(step_mask.numpy(), 1)
    expected_step = parts.model(
        input_ids=torch.from_numpy(step_ids),
        attention_mask=step_mask,
        position_ids=torch.from_numpy(step_positions),
        cache=cache,
    ).logits.numpy()
    step_embeds, step_per_layer = runner.run("embed_tokens", {"input_ids": step_ids}).values()
    past = {k.replace("present", "past_key_values"): v for k, v in out.items() if k.startswith("present")}
    step = runner.run(
        "decoder_model_merged",
        {
            "inputs_embeds": step_embeds,
            "per_layer_inputs": step_per_layer,
            "attention_mask": step_mask.numpy(),
            "position_ids": step_positions,
            "num_logits_to_keep": np.array(1, dtype=np.int64),
            **past,
        },
    )
    assert np.abs(step["logits"] - expected_step).max() < MAX_DIFF


def test_files_carry_no_build_paths_or_traces(
    tiny_multimodal: Path, multimodal_onnx: tuple[Path, dict]
) -> None:
    out = multimodal_onnx[0]
    leaks = [str(REPO_ROOT).encode(), str(tiny_multimodal).encode(), str(out).encode()]
    leaks += [b"site-packages", b"stack_trace", b"pkg.torch", b"modeling_gemma3n"]
    for path in sorted((out / "onnx").glob("*.onnx")):
        raw = path.read_bytes()
        assert not [leak for leak in leaks if leak in raw], path.name
        model = onnx.load(str(path), load_external_data=False)
        assert not model.metadata_props and not model.graph.metadata_props
        assert not any(node.metadata_props or node.doc_string for node in model.graph.node)
        locations = {
            entry.value
            for tensor in model.graph.initializer
            for entry in tensor.external_data
            if entry.key == "location"
        }
        assert locations == {f"{path.name}_data"}


def test_reexport_is_byte_identical(tiny_text: Path, text_onnx: tuple[Path, dict], tmp_path: Path) -> None:
    """A second export, in a fresh process with another string-hash seed, writes the same bytes."""
    seed = "8" if os.environ.get("PYTHONHASHSEED") == "7" else "7"
    script = "import sys; from pathlib import Path; from web_export.export import export_onnx; "
    script += "export_onnx(Path(sys.argv[1]), Path(sys.argv[2]))"
    env = {**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-c", script, str(tiny_text), str(tmp_path / "again")]
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    first, second = text_onnx[0] / "onnx", tmp_path / "again" / "onnx"
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
