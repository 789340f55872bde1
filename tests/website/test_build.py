"""`matslice build-web` as a user runs it on a tiny checkpoint: killed mid-export it leaves nothing the page or
the next build would take as complete, and the next build finishes the job and cleans up."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from helpers import MATSLICE, kill_when, partials

from gemma3n.config import parse_config
from standins import nano, tiny
from website.build import default_slice


def test_killed_build_then_rebuild(tiny_text: Path, tmp_path: Path, monkeypatch) -> None:
    """The bundle is exported into the user cache (a temporary one here, so the build happens now) and linked
    into OUT: killed while writing its ONNX files, neither the cache entry nor OUT's variant exists."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MATSLICE_CACHE", str(cache))
    out = tmp_path / "web"
    args = ["build-web", "--model", str(tiny_text), "--no-parent", "--layers-to-skip", "6", "--name", "small",
            "--out", str(out)]

    def exporting() -> bool:
        variants = cache / "variants"
        return variants.is_dir() and any(p.glob("onnx/*.onnx*") for p in partials(variants))

    assert kill_when(args, exporting), "the build finished before it could be killed"
    listed = json.loads((out / "models.json").read_text())["variants"] if (out / "models.json").exists() else []
    assert not listed, "a variant whose bundle was never finished is listed"
    assert not (out / "models" / "text-small").exists()
    assert partials(cache / "variants") and not [p for p in (cache / "variants").iterdir() if p.is_dir()
                                                 and not p.name.startswith(".")]

    done = subprocess.run([*MATSLICE, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    models = json.loads((out / "models.json").read_text())
    variants = models["variants"]
    assert [v["id"] for v in variants] == ["text-small"]
    # What the page and the demo read: the text sessions, the checkpoint the variants came from; and what the loader
    # decides a backend by, in each manifest (gemma3n/dtypes.py's table, and the ops WASM lacks).
    assert models["source"] == str(tiny_text.resolve())
    assert variants[0]["text_sessions"] == ["embed_tokens", "decoder_model_merged"]
    manifest = json.loads((out / "models" / "text-small" / "manifest.json").read_text())
    assert manifest["text_sessions"] == ["embed_tokens", "decoder_model_merged"]
    assert manifest["dtype_info"]["q4"] == {"needs_shader_f16": False, "int4": True, "not_on_wasm": []}
    assert manifest["embeddings"] == "bundled"
    for name, record in manifest["files"].items():
        assert (out / "models" / "text-small" / name).stat().st_size == record["bytes"], name
    assert not partials(out / "models") and not [p for p in (out / "models").iterdir() if p.name.startswith(".")]
    assert not partials(cache / "variants")  # the killed build's scratch slice and partial bundle are gone


def test_default_slice_is_the_nano_models_e2b_like_slice() -> None:
    spec, name = default_slice(parse_config(nano.nano_config(), "nano"))
    assert spec == nano.E2B_LIKE.slice_spec(modalities=("text",)) and name == "e2b-like-text"
    other, _ = default_slice(parse_config(tiny.tiny_config(), "tiny"))  # another shape: the generic cut
    assert other.modalities == ("text",) and other.layers_to_skip
