"""The demo app for real: started as `python -m demo` on the tiny default variants, driven by gradio_client.

Each variant's text is checked against its own greedy output computed here independently (parity's
`OnnxGemma3n.greedy` over the bundle's sessions in onnxruntime), and the numbers against the manifests.
The default bundles are built once into the repository's .cache/demo (minutes the first time).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

gradio_client = pytest.importorskip("gradio_client")

from demo.variants import Registry, Variant, build_defaults  # noqa: E402
from slicer.default import default_checkpoint  # noqa: E402
from web_export.parity import OnnxGemma3n, ParityInputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "the cat sat on the mat"
STEPS = 12


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_defaults(ROOT / ".cache/demo", default_checkpoint(ROOT / ".cache/models"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def client(registry: Registry, tmp_path_factory):
    """`python -m demo --port P <bundle folders>` in a subprocess, and a client once it answers."""
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    folders = [str(v.folder) for v in registry.variants.values()]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "demo", "--port", str(port), *folders],
                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield _connect(f"http://127.0.0.1:{port}/", server, log)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _connect(url: str, server: subprocess.Popen, log: Path, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the demo exited with {server.returncode}:\n{log.read_text()}")
        try:
            return gradio_client.Client(url, verbose=False)
        except Exception:
            time.sleep(1)
    pytest.fail(f"the demo did not answer within {timeout} s:\n{log.read_text()}")


def _sessions(variant: Variant) -> OnnxGemma3n:
    return OnnxGemma3n.from_bundle(variant.folder, variant.manifest["default_dtype"])


def expected_greedy(
    variant: Variant, prompt: str, steps: int, audio: np.ndarray | None = None
) -> tuple[list[int], str]:
    """Greedy ids up to and including the first EOS, and their text, computed without the demo's code."""
    from transformers import AutoProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(variant.folder)
    content = ([{"type": "audio"}] if audio is not None else []) + [{"type": "text", "text": prompt}]
    messages = [{"role": "user", "content": content}]
    if audio is None:
        inputs = ParityInputs(torch.tensor([tokenizer.apply_chat_template(messages, add_generation_prompt=True)[
            "input_ids"]]))
    else:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        out = AutoProcessor.from_pretrained(variant.folder)(text=text, audio=[audio], add_special_tokens=False,
                                                            return_tensors="pt")
        inputs = ParityInputs(out["input_ids"], None, out["input_features"], out["input_features_mask"])
    _, ids = _sessions(variant).greedy(inputs, steps - 1)
    eos = json.loads((variant.folder / "generation_config.json").read_text())["eos_token_id"]
    cut = next((i for i, t in enumerate(ids) if t in eos), None)
    ids = ids if cut is None else ids[: cut + 1]
    return ids, tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=True)


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
        assert got["effective_params"] == variant.manifest["params"]["effective"] > 0
        assert 0 < got["total_params"] <= variant.manifest["params"]["total"]
        assert got["load_seconds"] > 0 and got["ttft_seconds"] > 0
        assert got["new_tokens"] == len(ids) and (got["tokens_per_second"] or 0) > 0
        assert got["kl_vs_parent"] >= 0 and 0 <= got["top1_vs_parent"] <= 1
    assert by_name["parent"]["kl_vs_parent"] == 0.0 and by_name["parent"]["top1_vs_parent"] == 1.0
    assert all(by_name[n]["kl_vs_parent"] > 0 for n in names if n != "parent")
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
    assert parent["kl_vs_parent"] == 0.0 and text_only["kl_vs_parent"] > 0  # scored against the text-only parent
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
    assert "KL vs parent" in final[3]["value"] and "0.0000 nats" in final[3]["value"]
    assert final[1 + 3 * 2]["visible"] is False  # unused slots hidden
    message = client.predict(PROMPT, ["parent"], None, 4, api_name="/run")[0]
    assert "at least 2" in message
    assert "prompt is empty" in client.predict("", names, None, 4, api_name="/run")[0]


def test_plot_marks_the_pareto_front(client, registry: Registry) -> None:
    svg = client.predict(api_name="/plot")
    assert svg.startswith("<svg") and all(name in svg for name in registry.names)
    assert "parent (Pareto)" in svg and "harsh-text (Pareto)" in svg  # best quality; smallest bundle


def test_pareto_front() -> None:
    from demo.app import pareto_front

    points = {"a": (1.0, 0.5), "b": (2.0, 0.4), "c": (3.0, 1.0), "d": (1.0, 0.5)}
    assert pareto_front(points) == ["a", "d", "c"]


def test_models_json_registry(registry: Registry, tmp_path: Path) -> None:
    """The format `python -m web_export.build` writes: variants with id, relative path and a parent flag."""
    from demo.variants import UnknownVariant, from_models_json

    entries = [{"id": f"v-{v.name}", "path": os.path.relpath(v.folder, tmp_path) + "/", "parent": v.name == "parent"}
               for v in reversed(list(registry.variants.values()))]
    (tmp_path / "models.json").write_text(json.dumps({"format": 1, "default": "v-e2b-like", "variants": entries}))
    loaded = from_models_json(tmp_path / "models.json")
    assert loaded.parent == "v-parent" and loaded.names == [e["id"] for e in entries]
    assert loaded.get("v-parent").bytes == registry.get("parent").bytes
    with pytest.raises(UnknownVariant, match="unknown variant"):
        loaded.get(str(registry.get("parent").folder))
