"""A vocabulary-cut checkpoint: embedding rows in order, logits exactly the parent's at the kept ids, and its bundle
runs; bad vocabulary options are one error line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_CORPUS, assert_download_predicted, load_json
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]


# --- The sliced checkpoint: rows in order, logits exactly the parent's at the kept ids ---------------------
class _Identity(torch.nn.Module):
    """A skipped decoder layer: the AltUp-stacked hidden states pass through unchanged."""

    layer_idx = 6

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def _child_checkpoint(parent: Path, out: Path, corpus: Path, *extra: str) -> Path:
    done = subprocess.run([sys.executable, "-m", "matslice", "slice", str(parent), str(out), "--vocab-corpus",
                           str(corpus), *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def test_tiny_multimodal_child_matches_parent_at_kept_ids(tiny_multimodal: Path, tmp_path: Path) -> None:
    """Layers skipped and the vocabulary cut together; the prompt carries audio soft tokens, whose block moved."""
    from transformers import AutoProcessor, Gemma3nForConditionalGeneration

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TINY_CORPUS + "hi there\n")
    child = _child_checkpoint(tiny_multimodal, tmp_path / "child", corpus, "--layers-to-skip", "6")
    mapping = json.loads((child / "vocab_map.json").read_text())["parent_ids"]
    config = json.loads((child / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == len(mapping) < 288
    parent_model = Gemma3nForConditionalGeneration.from_pretrained(tiny_multimodal).eval()
    child_model = Gemma3nForConditionalGeneration.from_pretrained(child).eval()
    parent_model.model.language_model.layers[6] = _Identity()
    audio = (0.3 * np.sin(np.linspace(0, 400 * np.pi, 8000))).astype(np.float32)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": "hi there"}]}]
    inputs = {}
    for name, folder in (("parent", tiny_multimodal), ("child", child)):
        inputs[name] = AutoProcessor.from_pretrained(folder).apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    assert [mapping[i] for i in inputs["child"]["input_ids"][0].tolist()] == inputs["parent"]["input_ids"][0].tolist()
    assert (inputs["child"]["input_ids"] == config["audio_token_id"]).sum() > 0
    with torch.no_grad():
        expected = parent_model(**inputs["parent"]).logits[0][:, mapping]
        got = child_model(**inputs["child"]).logits[0]
    assert (got - expected).abs().max().item() <= 1e-5
    parent_argmax = parent_model(**inputs["parent"]).logits[0].argmax(-1).tolist()
    for child_id, parent_id in zip(got.argmax(-1).tolist(), parent_argmax, strict=True):
        if parent_id in mapping:  # the parent's choice survived the cut: the child makes the same one
            assert mapping[child_id] == parent_id


def test_nano_child_matches_parent_and_its_bundle_runs(vocab_parents: Path, tmp_path: Path, nano_corpus) -> None:
    """A cut of the trained nano model to 300 of its training paragraphs, text only: logits equal the parent's
    at the kept ids, and the exported bundle passes `verify` and greedy-generates PyTorch's ids in transformers.js."""
    from transformers import AutoModelForCausalLM, Gemma3nForConditionalGeneration

    from evaluation.parity import check_parity
    from web_export.bundle import write_bundle
    from web_export.node import node_generate

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(nano_corpus[0][1])
    child = _child_checkpoint(vocab_parents / "nano", tmp_path / "child", corpus, "--modalities", "text")
    mapping = json.loads((child / "vocab_map.json").read_text())["parent_ids"]
    text = nano_corpus[0][1].splitlines()[3]
    parent_ids = AutoTokenizer.from_pretrained(vocab_parents / "nano")(text, return_tensors="pt").input_ids
    child_ids = AutoTokenizer.from_pretrained(child)(text, return_tensors="pt").input_ids
    if [mapping[i] for i in child_ids[0].tolist()] != parent_ids[0].tolist():
        pytest.fail("a training paragraph tokenizes differently in the child: choose a covered one")
    parent_model = Gemma3nForConditionalGeneration.from_pretrained(vocab_parents / "nano").eval()
    child_model = AutoModelForCausalLM.from_pretrained(child).eval()
    with torch.no_grad():
        expected = parent_model(input_ids=parent_ids).logits[0][:, mapping]
        got = child_model(input_ids=child_ids).logits[0]
    assert (got - expected).abs().max().item() <= 1e-5

    bundle = write_bundle(child, tmp_path / "bundle", dtypes=("fp32",))
    assert_download_predicted(bundle, vocab_parents / "nano", "--vocab-corpus", str(corpus), "--modalities", "text")
    report = check_parity(child, bundle, "fp32", steps=12)
    assert report.passed, report.summary()
    prompt = child_ids[0, :12].tolist()
    with torch.no_grad():
        want = child_model.generate(torch.tensor([prompt]), max_new_tokens=8, min_new_tokens=8, do_sample=False)
    got_js = node_generate(bundle, dtype="fp32", ids=prompt, max_new_tokens=8, min_new_tokens=8)
    assert got_js["new_ids"] == want[0, len(prompt):].tolist()


@pytest.mark.parametrize(("corpus_text", "extra", "broken", "message"), [
    (" \n", (), False, "the --vocab-corpus text is empty"),
    (TINY_CORPUS, ("--vocab-size", "10"), False, "below the"),
    (TINY_CORPUS + "Привет", (), False, "needs tokens outside the vocabulary"),
    (TINY_CORPUS, (), True, "vocabulary slicing needs a BPE tokenizer with byte_fallback"),
    (None, (), False, "does not exist"),
])
def test_bad_vocabulary_input_is_one_error_line(tiny_text: Path, tmp_path: Path, corpus_text, extra, broken,
                                                message) -> None:
    parent = tiny_text
    if broken:  # a WordPiece-like tokenizer: not BPE
        parent = tmp_path / "parent"
        shutil.copytree(tiny_text, parent)
        tokenizer = load_json(parent, "tokenizer.json")
        tokenizer["model"]["type"] = "WordPiece"
        (parent / "tokenizer.json").write_text(json.dumps(tokenizer))
    corpus = tmp_path / "corpus.txt"
    if corpus_text is not None:
        corpus.write_text(corpus_text)
    for command in ("slice", "plan"):
        args = [str(parent), *([str(tmp_path / "child")] if command == "slice" else [])]
        done = subprocess.run([sys.executable, "-m", "matslice", command, *args, "--vocab-corpus", str(corpus),
                               *extra], capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "child").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
