"""One variant built once: `build_variant` keys a bundle by the parent's content, the slice, dtypes, encoders and
code; builds it into the user cache whole, reporting progress as numbers; links it where a caller wants it; and
builds anew when a weight file changes (the demo once served a stale bundle then: its key was the path and
config.json)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from gemma3n.config import load_config
from slicer.options import plan_for
from slicer.plan import SliceSpec
from web_export.variant import build_variant, variant_key

SLICE = SliceSpec(layers_to_skip=(6,))


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary $MATSLICE_CACHE: a build that must happen now, apart from the machine's cache."""
    monkeypatch.setenv("MATSLICE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def nudge_a_weight(checkpoint: Path, name: str = "model.layers.0.mlp.down_proj.weight") -> None:
    """Flip the top mantissa bit of the first value of an fp32 weight in model.safetensors, in place: a weight
    change every dtype's quantization sees (one scale of its block changes)."""
    path = checkpoint / "model.safetensors"
    data = bytearray(path.read_bytes())
    size = struct.unpack("<Q", data[:8])[0]
    record = json.loads(data[8:8 + size])[name]
    assert record["dtype"] == "F32"
    data[8 + size + record["data_offsets"][0] + 2] ^= 0x40  # little-endian fp32: byte 2 holds mantissa bits 16-22
    path.write_bytes(bytes(data))


def onnx_bytes(bundle: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((bundle / "onnx").iterdir())}


def test_built_once_linked_and_reported(tiny_text: Path, cache: Path, tmp_path: Path) -> None:
    heard: list[tuple[float, str]] = []
    first = build_variant(tiny_text, SLICE, tmp_path / "site" / "child", ("q4",),
                          progress=lambda fraction, what: heard.append((fraction, what)))
    assert not first.reused and first.bundle == tmp_path / "site" / "child"
    entry = cache / "variants" / first.key
    assert json.loads((entry / "manifest.json").read_text())["matslice"]["kept_layers"] == [0, 1, 2, 3, 4, 5, 7]
    for name in json.loads((entry / "manifest.json").read_text())["files"]:  # hard links: one copy of the bytes
        assert (first.bundle / name).stat().st_ino == (entry / name).stat().st_ino, name
    fractions = [fraction for fraction, _ in heard]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    stages = [what for _, what in heard]
    assert "slicing" in stages and "writing (q4): decoder_model_merged" in stages
    assert any(what.startswith("tracing sessions") and "decoder_model_merged" in what for what in stages)
    again = build_variant(tiny_text, SLICE, tmp_path / "elsewhere", ("q4",))
    assert again.reused and again.key == first.key
    assert onnx_bytes(again.bundle) == onnx_bytes(entry)
    plan = plan_for(load_config(tiny_text), SLICE, tiny_text)
    assert variant_key(tiny_text, plan, ("q4",), None) == first.key
    assert variant_key(tiny_text, plan, ("q8",), None) != first.key  # dtypes are part of the key
    assert variant_key(tiny_text, None, ("q4",), None) != first.key
    assert [p.name for p in (cache / "variants").iterdir() if not p.name.endswith(".lock")] == [first.key]


def test_a_changed_weight_rebuilds_the_demo_variant(tiny_text: Path, tmp_path: Path) -> None:
    """In the user cache: both bundles are keyed by content (the tiny model and the nudge are deterministic), so
    a machine exports them once; the assertions hold whether they were built now or earlier."""
    from demo.variants import from_paths

    checkpoint = shutil.copytree(tiny_text, tmp_path / "mine")
    before = from_paths([checkpoint]).get("mine")
    assert from_paths([checkpoint]).get("mine").folder == before.folder  # unchanged: reused
    nudge_a_weight(checkpoint)
    after = from_paths([checkpoint]).get("mine")
    assert after.folder != before.folder
    changed = [name for name, data in onnx_bytes(after.folder).items() if onnx_bytes(before.folder)[name] != data]
    assert changed  # the new bundle holds the new weight
