"""The demo app for real: started as `matslice demo` on the default variants, driven by gradio_client.

Each variant's text is checked against its own greedy output computed here (the bundle's sessions in
onnxruntime), its KL and top-1 against numpy over the two bundles' logits, its parameter count against the
sliced checkpoint's safetensors headers, and its bytes against the files on disk. The default bundles are
built once into the user cache (minutes the first time on a machine).
"""

from __future__ import annotations

import json
import math
import os
import wave
from pathlib import Path

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")

from helpers import demo_server  # noqa: E402

from demo.variants import Registry, Variant, default_cache  # noqa: E402
from gemma3n.config import load_config  # noqa: E402
from gemma3n.safetensors import read_tensors  # noqa: E402
from standins import nano  # noqa: E402
from standins.default import default_checkpoint  # noqa: E402
from web_export.runtime import BundleRuntime, Prompt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROMPT = nano.PROMPTS[0]  # one the default model answers at length (a short one may end its turn at once)
STEPS = 12


@pytest.fixture(scope="module")
def registry(default_variants: Registry) -> Registry:
    return default_variants


def registry_checkpoint(name: str) -> Path:
    """The checkpoint a default variant was exported from (demo.variants.build_defaults' layout)."""
    parent = default_checkpoint()
    return parent if name == "parent" else default_cache() / parent.name / "checkpoints" / name


@pytest.fixture(scope="module")
def client(registry: Registry, tmp_path_factory):
    """`python -m demo --port P <bundle folders>` in a subprocess, and a client once it answers."""
    log = tmp_path_factory.mktemp("demo") / "server.log"
    with demo_server([str(v.folder) for v in registry.variants.values()], log, timeout=90) as (_, client):
        yield client


def _sessions(variant: Variant) -> BundleRuntime:
    return BundleRuntime.from_bundle(variant.folder, variant.manifest["default_dtype"])


def chat_prompt(variant: Variant, prompt: str, audio: np.ndarray | None = None) -> Prompt:
    from transformers import AutoProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(variant.folder)
    content = ([{"type": "audio"}] if audio is not None else []) + [{"type": "text", "text": prompt}]
    messages = [{"role": "user", "content": content}]
    if audio is None:
        return Prompt(tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    out = AutoProcessor.from_pretrained(variant.folder)(text=text, audio=[audio], add_special_tokens=False,
                                                        return_tensors="np")
    return Prompt(out["input_ids"], input_features=out["input_features"],
                  input_features_mask=out["input_features_mask"])


def expected_greedy(
    variant: Variant, prompt: str, steps: int, audio: np.ndarray | None = None
) -> tuple[list[int], str]:
    """Greedy ids up to and including the first EOS, and their text, computed without the demo's code."""
    from transformers import AutoTokenizer

    _, ids = _sessions(variant).greedy(chat_prompt(variant, prompt, audio), steps - 1)
    eos = json.loads((variant.folder / "generation_config.json").read_text())["eos_token_id"]
    cut = next((i for i, t in enumerate(ids) if t in eos), None)
    ids = ids if cut is None else ids[: cut + 1]
    tokenizer = AutoTokenizer.from_pretrained(variant.folder)
    return ids, tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=True)


def expected_divergence(parent: Variant, variant: Variant, prompt: str, steps: int) -> tuple[float, float]:
    """KL(parent || variant) and top-1 agreement over the prompt and the parent's greedy continuation, in numpy."""
    ids, _ = expected_greedy(parent, prompt, steps)
    tokens = chat_prompt(parent, prompt)
    sequence = tokens.with_ids([*tokens.ids, *ids[:-1]])
    p, q = (_sessions(v).logits(sequence).astype(np.float64) for v in (parent, variant))
    log_p = p - p.max(-1, keepdims=True) - np.log(np.exp(p - p.max(-1, keepdims=True)).sum(-1, keepdims=True))
    log_q = q - q.max(-1, keepdims=True) - np.log(np.exp(q - q.max(-1, keepdims=True)).sum(-1, keepdims=True))
    kl = float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())
    return kl, float((p.argmax(-1) == q.argmax(-1)).mean())


def effective_params(checkpoint: Path) -> int:
    """Decoder parameters without the two embedding tables, from the checkpoint's safetensors headers."""
    prefix = load_config(checkpoint).text_prefix
    return sum(math.prod(t.shape) for name, t in read_tensors(checkpoint).items()
               if name.startswith(prefix) and "embed_tokens" not in name)


def _wav(path: Path, seconds: float = 1.0, rate: int = 22050) -> Path:
    t = np.arange(int(seconds * rate))
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.sin(t * 0.05) * 8000).astype(np.int16).tobytes())
    return path


def test_variants_endpoint(client, registry: Registry) -> None:
    assert list(client.predict(api_name="/variants")) == registry.names


def test_compare_texts_and_numbers(client, registry: Registry) -> None:
    names = registry.names
    result = client.predict(PROMPT, names, None, STEPS, api_name="/compare")
    assert result["parent"] == registry.parent == "parent"
    by_name = {r["name"]: r for r in result["variants"]}
    assert list(by_name) == names
    for name, got in by_name.items():
        variant = registry.get(name)
        ids, text = expected_greedy(variant, PROMPT, STEPS)
        assert got["token_ids"] == ids and got["text"] == text, name
        files = [p for p in variant.folder.rglob("*") if p.is_file() and p.name != "manifest.json"]
        assert got["bundle_bytes"] == sum(r["bytes"] for r in variant.manifest["files"].values())
        assert got["bundle_bytes"] == sum(p.stat().st_size for p in files)
        checkpoint = registry_checkpoint(name)
        assert got["effective_params"] == effective_params(checkpoint), name
        assert got["load_seconds"] > 0 and got["ttft_seconds"] > 0
        assert got["new_tokens"] == len(ids) and (got["tokens_per_second"] or 0) > 0
        kl, top1 = expected_divergence(registry.get("parent"), variant, PROMPT, STEPS)
        assert abs(got["kl_vs_parent"] - kl) <= 1e-6 and got["top1_vs_parent"] == top1, name
    assert by_name["parent"]["kl_vs_parent"] < 1e-6 < by_name["e2b-like"]["kl_vs_parent"]
    assert by_name["e2b-like"]["effective_params"] < by_name["parent"]["effective_params"]
    assert by_name["parent"]["bundle_bytes"] > by_name["e2b-like"]["bundle_bytes"] > by_name["harsh-text"][
        "bundle_bytes"]
    again = client.predict(PROMPT, names[:2], None, STEPS, api_name="/compare")["variants"]
    assert all(r["load_cached"] for r in again)
    assert [r["text"] for r in again] == [by_name[n]["text"] for n in names[:2]]


def test_audio_prompt(client, registry: Registry, tmp_path: Path) -> None:
    from demo.compare import read_audio

    wav = _wav(tmp_path / "tone.wav")
    result = client.predict(PROMPT, ["parent", "harsh-text"], gradio_client.handle_file(str(wav)), STEPS,
                            api_name="/compare")["variants"]
    parent, text_only = result
    assert parent["audio_used"] and not text_only["audio_used"] and "audio ignored" in text_only["note"]
    ids, text = expected_greedy(registry.get("parent"), PROMPT, STEPS, read_audio(wav, 16000))
    assert parent["token_ids"] == ids and parent["text"] == text
    assert parent["kl_vs_parent"] < 1e-6 < text_only["kl_vs_parent"]  # scored against the text-only parent
    assert text_only["text"] == expected_greedy(registry.get("harsh-text"), PROMPT, STEPS)[1]


@pytest.mark.parametrize(
    ("prompt", "names", "message"),
    [
        ("", ["parent"], "prompt is empty"),
        ("   ", ["parent"], "prompt is empty"),
        ("hi", ["no-such-variant"], "unknown variant"),
        ("hi", ["/etc/passwd"], "unknown variant"),
        ("x" * 33_000, ["parent"], "context"),
        ("hi", [], "pick 1 to 4"),
    ],
)
def test_bad_input_is_reported_and_app_keeps_serving(client, prompt: str, names: list[str], message: str) -> None:
    with pytest.raises(Exception, match=message):
        client.predict(prompt, names, None, 4, api_name="/compare")
    assert client.predict("hi", ["parent"], None, 2, api_name="/compare")["variants"][0]["new_tokens"] >= 1


def test_unreadable_audio(client, tmp_path: Path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not audio")
    with pytest.raises(Exception, match="cannot read the audio file"):
        client.predict("hi", ["parent"], gradio_client.handle_file(str(bad)), 4, api_name="/compare")
    assert client.predict(api_name="/variants")


def test_page_handler_streams_and_reports(client, registry: Registry) -> None:
    names = ["parent", "e2b-like"]
    updates = list(client.submit(PROMPT, names, None, STEPS, api_name="/run"))
    assert len(updates) > 2  # streamed: one update per round of tokens, then the scored one
    final = updates[-1]
    assert "done" in final[0]
    texts = [final[1 + 3 * i + 1]["value"] for i in range(len(names))]
    assert texts == [expected_greedy(registry.get(n), PROMPT, STEPS)[1] for n in names]
    assert "KL vs parent" in final[3]["value"] and "0.0000 nats" in final[3]["value"]  # the parent's own column
    assert final[1 + 3 * 2]["visible"] is False  # unused slots hidden
    message = client.predict(PROMPT, ["parent"], None, 4, api_name="/run")[0]
    assert "at least 2" in message
    assert "prompt is empty" in client.predict("", names, None, 4, api_name="/run")[0]


def test_plot_marks_the_pareto_front(client, registry: Registry) -> None:
    data = client.predict(api_name="/plot")
    points = {p["name"]: p for p in data["points"]}
    assert list(points) == registry.names
    for name, point in points.items():
        assert point["bundle_bytes"] == registry.get(name).bytes and 0 <= point["retention"] <= 1, point
    assert points["parent"]["retention"] == 1.0  # the parent agrees with itself everywhere
    assert points["parent"]["pareto"] and points["harsh-text"]["pareto"]  # best quality; smallest bundle
    assert data["front"] == sorted(data["front"], key=lambda n: points[n]["bundle_bytes"])
    assert data["front"] == [n for n in sorted(points, key=lambda n: points[n]["bundle_bytes"]) if points[n]["pareto"]]


def test_plot_labels_are_drawn_inside_the_figure() -> None:
    """Every variant's name is on the figure, whole, and names of crowded points do not overlap."""
    from matplotlib.text import Text

    from demo.plot import figure, plot_data

    sizes = {"parent": 9_000_000, "wide-right-edge-name": 8_900_000, "e2b-like": 5_000_000, "harsh-text": 120_000,
             "near-harsh": 130_000, "dominated": 6_000_000}
    retention = {"parent": 1.0, "wide-right-edge-name": 0.99, "e2b-like": 0.7, "harsh-text": 0.0, "near-harsh": 0.01,
                 "dominated": 0.5}
    data = plot_data(sizes, retention)
    assert data["front"] == ["harsh-text", "near-harsh", "e2b-like", "wide-right-edge-name", "parent"]
    fig = figure(data)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    labels = {t.get_text(): Text.get_window_extent(t, renderer) for t in fig.axes[0].texts}  # the text, no leader
    assert set(labels) == {n + (" (Pareto)" if n in data["front"] else "") for n in sizes}
    for text, extent in labels.items():
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, text
    extents = list(labels.values())
    assert not any(a.overlaps(b) for i, a in enumerate(extents) for b in extents[i + 1:])


def test_pareto_front() -> None:
    from demo.plot import pareto_front

    points = {"a": (1.0, 0.5), "b": (2.0, 0.4), "c": (3.0, 1.0), "d": (1.0, 0.5)}
    assert pareto_front(points) == ["a", "d", "c"]


def test_models_json_registry(registry: Registry, tmp_path: Path) -> None:
    """The format `matslice build-web` writes: variants with id, relative path and a parent flag, and the checkpoint
    they were cut from, which the parent variant keeps (the Design tab cuts it) while it is a checkpoint here."""
    from demo.variants import UnknownVariant, from_models_json

    entries = [{"id": f"v-{v.name}", "path": os.path.relpath(v.folder, tmp_path) + "/", "parent": v.name == "parent"}
               for v in reversed(list(registry.variants.values()))]
    source = registry.get("parent").checkpoint
    assert source is not None and (source / "config.json").is_file()
    for where, kept in ((source, source), (tmp_path / "gone", None)):
        (tmp_path / "models.json").write_text(json.dumps({"format": 1, "default": "v-e2b-like", "variants": entries,
                                                          "source": str(where)}))
        loaded = from_models_json(tmp_path / "models.json")
        assert loaded.get("v-parent").checkpoint == kept and loaded.get("v-e2b-like").checkpoint is None
    assert loaded.parent == "v-parent" and loaded.names == [e["id"] for e in entries]
    assert loaded.get("v-parent").bytes == registry.get("parent").bytes
    with pytest.raises(UnknownVariant, match="unknown variant"):
        loaded.get(str(registry.get("parent").folder))
