"""What tests share besides fixtures: the files a checkpoint folder holds, the byte oracle's check of a whole
bundle, running `matslice` and killing it half-way, serving the demo, and the vocabulary-cut tests' corpora and
tokenizer checks. Importable from any test module as `helpers` (tests/ is on the path)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from slicer import vocab
from slicer.vocab import VocabCut
from web_export.node import run_script
from website.serve import make_server

# every file of a multimodal checkpoint folder the standins write; a text-only one lacks the two processor files
CHECKPOINT_FILES = frozenset({
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "chat_template.jinja", "processor_config.json", "preprocessor_config.json",
})
TEXT_CHECKPOINT_FILES = CHECKPOINT_FILES - {"processor_config.json", "preprocessor_config.json"}


def assert_plan_exact(onnx_dir: Path, checkpoint: Path, dtypes: tuple[str, ...], sessions: tuple[str, ...] = (),
                      **options) -> None:
    """Every session variant under `onnx_dir` holds exactly the weight tensors `matslice plan` predicts for
    `checkpoint` (names, bytes, inside or outside the .onnx file), its data files hold exactly those, and its largest
    tensor is the predicted one (evaluation.written.measure raises on any difference)."""
    from evaluation.written import measure
    from gemma3n.config import load_config
    from gemma3n.safetensors import read_tensors
    from slicer.footprint import bundle_sessions, largest, session_parts, vision_tensors_from
    from web_export.quantize import variant_name

    config = load_config(checkpoint)
    vision = vision_tensors_from(read_tensors(checkpoint))
    for session in sessions or bundle_sessions(config):
        for dtype in dtypes:
            parts = session_parts(config, session, dtype, vision_tensors=vision, **options)
            written = measure(onnx_dir / variant_name(session, dtype), parts)
            assert written.largest_tensor == largest(parts), (session, dtype)


MATSLICE = [sys.executable, "-m", "matslice"]


def assert_download_predicted(bundle: Path, parent: Path, *options: str) -> None:
    """`matslice plan PARENT OPTIONS --json` predicts what a page downloads of `bundle` (one dtype, every session):
    its side files byte for byte (a vocabulary cut's rewritten tokenizer and config.json included), and the whole
    within 1 % (only each .onnx graph's own bytes are estimated)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    (dtype,) = manifest["dtypes"]
    done = subprocess.run([*MATSLICE, "plan", str(parent), *options, "--dtype", dtype, "--json"], capture_output=True,
                          text=True, check=True)
    predicted = json.loads(done.stdout)["bundle"]
    written = {name: r["bytes"] for name, r in manifest["files"].items()}
    assert predicted["side_files"] == {name: size for name, size in written.items() if not name.startswith("onnx/")}
    assert abs(predicted["download"][dtype]["all"] / sum(written.values()) - 1) < 0.01, (predicted["download"], written)


ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serving(folder: Path, **options) -> Iterator[str]:
    """`folder` served as `nox -s serve` serves it (options: `website.serve.make_server`'s ranges, latency), on a
    free port; yields the origin."""
    import threading

    server = make_server(folder, port=0, quiet=True, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def kill_when(args: list[str], ready: Callable[[], bool], timeout: float = 600) -> bool:
    """Start `matslice args...`, SIGKILL it as soon as `ready()` holds; True if it was killed while running
    (False: it finished first, and the caller has nothing to check)."""
    process = subprocess.Popen([*MATSLICE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if ready():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.01)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def partials(folder: Path) -> list[Path]:
    """Hidden work folders an interrupted write left beside its target."""
    return [p for p in folder.iterdir() if p.name.startswith(".") and (".partial-" in p.name or ".old-" in p.name)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def demo_server(args: list[str], log: Path, timeout: float = 120,
                env: dict[str, str] | None = None) -> Iterator[tuple[str, object]]:
    """`matslice demo --port P args...` in a subprocess (with `env` added to its environment); yields (url,
    gradio_client.Client) once it answers, and stops the server on exit. Fails the test with the server's log if
    it exits or stays silent."""
    import gradio_client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1",
           **(env or {})}
    with open(log, "w") as out:
        server = subprocess.Popen([*MATSLICE, "demo", "--port", str(port), *args], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                pytest.fail(f"the demo exited with {server.returncode}:\n{log.read_text()}")
            try:
                client = gradio_client.Client(url, verbose=False)
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(f"the demo did not answer within {timeout} s:\n{log.read_text()}")
                time.sleep(1)
        yield url, client
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- Vocabulary cuts (tests/slicer/test_vocab_*.py) ---------------------------------------------------------
# Tiny's alphabet is printable ASCII, space and newline (no byte tokens): its corpus is lowercase prose.
TINY_CORPUS = "the cat sat on the mat.\nthe ring is in the water; she went there.\nwe sing when the sun is out.\n"
TINY_UNSEEN = ["Zebra QUIZ: 42 jumps! (x+y)*z = {a|b} ~ `q`", "the_cat@home#1 $5 %^&", "  double  spaces \n\n\n end"]
NON_ASCII = ["Привет, мир!", "emoji 😀🎉 and café", "中文字符 und Ünïcödé ß", "\u2028line\tseparator\r\nx"]
CHATS = [
    [{"role": "user", "content": "where is the cat?"}],
    [
        {"role": "system", "content": "be brief."},
        {"role": "user", "content": "what is a list?"},
        {"role": "assistant", "content": "a sequence of values."},
        {"role": "user", "content": "Привет 😀 and a zyzzyva"},
    ],
]



def load_json(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def vocab_layout_of(folder: Path) -> tuple[int, int]:
    return vocab.vocab_layout(load_json(folder, "config.json"))


def cut_of(folder: Path, corpus: list[tuple[str, str]], vocab_size: int | None = None) -> VocabCut:
    text_vocab, parent_vocab = vocab_layout_of(folder)
    return vocab.choose(
        load_json(folder, "tokenizer.json"), corpus, text_vocab=text_vocab, parent_vocab=parent_vocab,
        vocab_size=vocab_size)


def write_child(parent: Path, cut: VocabCut, out: Path) -> Path:
    """The tokenizer files of a child folder, as the slicer will write them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(vocab.dumps(vocab.prune_tokenizer(load_json(parent, "tokenizer.json"), cut)))
    config = vocab.remap_tokenizer_config(load_json(parent, "tokenizer_config.json"), cut)
    (out / "tokenizer_config.json").write_text(vocab.dumps(config))
    (out / "config.json").write_text(vocab.dumps(vocab.remap_config(load_json(parent, "config.json"), cut)))
    if (parent / "generation_config.json").exists():
        generation = vocab.remap_config(load_json(parent, "generation_config.json"), cut)
        (out / "generation_config.json").write_text(vocab.dumps(generation))
    shutil.copy(parent / "chat_template.jinja", out / "chat_template.jinja")
    (out / "vocab_map.json").write_text(vocab.vocab_map_json(cut))
    return out


def tokens_of(folder: Path, text: str) -> list[str]:
    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).tokens


def node_tokenize(folder: Path, texts: list[str], chats: list, tmp_path: Path) -> dict:
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH: install Node.js 20+")
    request = tmp_path / f"request-{folder.name}.json"
    request.write_text(json.dumps({"folder": str(folder), "texts": texts, "chats": chats}))
    return run_script("tokenize.mjs", [str(request)], timeout=300)


def python_chat(tokenizer, messages: list) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


def check_covered(parent: Path, child: Path, cut: VocabCut, texts: list[str]) -> int:
    """Texts whose parent tokens are all kept get the parent's tokens; returns how many were covered."""
    return check_covered_json(load_json(parent, "tokenizer.json"), load_json(child, "tokenizer.json"), cut, texts)


def check_covered_json(parent_json: dict, child_json: dict, cut: VocabCut, texts: list[str]) -> int:
    parent_tok = Tokenizer.from_str(json.dumps(parent_json))
    child_tok = Tokenizer.from_str(json.dumps(child_json))
    covered = 0
    for text in texts:
        want = parent_tok.encode(text, add_special_tokens=False)
        got = child_tok.encode(text, add_special_tokens=False)
        if all(cut.child_of(i) is not None for i in want.ids):
            covered += 1
            assert got.tokens == want.tokens, text
            assert [cut.parent_of(i) for i in got.ids] == want.ids
        assert child_tok.decode(got.ids) == parent_tok.decode(want.ids)  # lossless exactly where the parent is
    return covered
