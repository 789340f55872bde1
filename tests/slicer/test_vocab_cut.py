"""Vocabulary cuts on the tiny and nano tokenizers: exact on covered text, the ids in every config file moved with
them, bad input refused in one line, and the same inputs giving the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import NON_ASCII, TINY_CORPUS, check_covered, cut_of, load_json, vocab_layout_of, write_child
from tokenizers import Tokenizer

from gemma3n.errors import UserError
from slicer import vocab
from standins.nano import nano_config
from standins.tiny import tiny_config

ROOT = Path(__file__).resolve().parents[2]


# --- Exactness -------------------------------------------------------------------------------------------
def test_tiny_corpus_tokenizes_as_before(vocab_parents: Path, tmp_path: Path) -> None:
    parent = vocab_parents / "tiny"
    cut = cut_of(parent, [("tiny.txt", TINY_CORPUS)])
    child = write_child(parent, cut, tmp_path / "child")
    lines = TINY_CORPUS.splitlines()
    words = TINY_CORPUS.split()
    recombined = [" ".join(words[i::3]) for i in range(3)] + ["\n".join(lines[::-1])]
    assert check_covered(parent, child, cut, [TINY_CORPUS, *lines, *recombined]) == 1 + len(lines) + len(recombined)
    assert cut.child_text_vocab < 256 and cut.origin["kept_by_rule"]["characters"] > 90  # no byte tokens in tiny


def test_nano_corpus_and_more_tokenize_as_before(vocab_parents: Path, tmp_path: Path, nano_corpus, held_out) -> None:
    parent = vocab_parents / "nano"
    cut = cut_of(parent, nano_corpus)
    child = write_child(parent, cut, tmp_path / "child")
    lines = nano_corpus[0][1].splitlines()
    assert check_covered(parent, child, cut, [nano_corpus[0][1], *lines]) == 1 + len(lines)
    # Exactness is a property of the kept set, not of the corpus: any text whose tokens are kept is exact.
    assert check_covered(parent, child, cut, held_out) > 0
    assert cut.child_text_vocab < 2048 and cut.origin["kept_by_rule"]["bytes"] == 256


@pytest.mark.parametrize("vocab_size", [400, 700, 1200])
def test_nano_capped_cut_is_closed_and_exact(vocab_parents: Path, tmp_path: Path, nano_corpus, vocab_size: int) -> None:
    parent = vocab_parents / "nano"
    cut = cut_of(parent, nano_corpus, vocab_size)
    assert cut.child_text_vocab <= vocab_size
    assert cut.origin["emitted_dropped"] > 0
    # Closed: every kept token BPE can build has all its pieces kept.
    tokenizer_json = load_json(parent, "tokenizer.json")
    bpe = vocab._Bpe(tokenizer_json, *vocab_layout_of(parent))
    kept = {bpe.token[i] for i in cut.text_ids}
    for token in kept:
        assert (bpe.pieces(token) or {token}) <= kept, token
    child = write_child(parent, cut, tmp_path / "child")
    # Under a cap whole paragraphs rarely survive; words and word pairs of the corpus do.
    words = nano_corpus[0][1].split()[:3000]
    pieces = [" " + word for word in words] + [" ".join(words[i : i + 2]) for i in range(0, len(words), 2)]
    assert check_covered(parent, child, cut, pieces) > len(pieces) // 10


def test_most_frequent_tokens_win_under_a_cap(vocab_parents: Path, nano_corpus) -> None:
    parent = vocab_parents / "nano"
    small, large = cut_of(parent, nano_corpus, 500), cut_of(parent, nano_corpus, 1000)
    assert set(small.text_ids) <= set(large.text_ids)
    assert small.origin["covered_token_fraction"] < large.origin["covered_token_fraction"]
    tokenizer = Tokenizer.from_file(str(parent / "tokenizer.json"))
    counts: dict[int, int] = {}
    for i in tokenizer.encode(nano_corpus[0][1], add_special_tokens=False).ids:
        counts[i] = counts.get(i, 0) + 1
    most = max(counts, key=lambda i: (counts[i], -i))
    assert small.child_of(most) is not None


def test_python_bpe_matches_tokenizers_library(vocab_parents: Path, held_out) -> None:
    """The single-token BPE the closure relies on equals the tokenizers library on whole lines."""
    parent = vocab_parents / "nano"
    bpe = vocab._Bpe(load_json(parent, "tokenizer.json"), *vocab_layout_of(parent))
    tokenizer = Tokenizer.from_file(str(parent / "tokenizer.json"))
    for line in held_out[:60] + NON_ASCII[:3]:
        final, _ = bpe.run(line.replace(" ", "▁"))
        assert final == tokenizer.encode(line, add_special_tokens=False).tokens


# --- Config, tokenizer_config, vocab map -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "nano"])
def test_multimodal_config_moves_together(vocab_parents: Path, name: str, nano_corpus) -> None:
    parent = vocab_parents / name
    corpus = [("tiny.txt", TINY_CORPUS)] if name == "tiny" else nano_corpus
    cut = cut_of(parent, corpus)
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


def test_text_only_and_generation_config(vocab_parents: Path, tmp_path: Path) -> None:
    parent = vocab_parents / "tiny"
    cut = cut_of(parent, [("tiny.txt", TINY_CORPUS)])
    child = write_child(parent, cut, tmp_path / "child")
    config, generation = load_json(child, "config.json"), load_json(child, "generation_config.json")
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


def test_tokenizer_config_added_tokens_decoder_is_remapped(vocab_parents: Path) -> None:
    parent = vocab_parents / "nano"
    cut = cut_of(parent, [("a.txt", "the list")])
    tokenizer_json = load_json(parent, "tokenizer.json")
    table = {str(e["id"]): {k: v for k, v in e.items() if k != "id"} for e in tokenizer_json["added_tokens"]}
    child = vocab.remap_tokenizer_config({"added_tokens_decoder": table, "bos_token": "<bos>"}, cut)
    assert child["bos_token"] == "<bos>"
    for key, entry in child["added_tokens_decoder"].items():
        assert table[str(cut.parent_of(int(key)))] == entry
    assert len(child["added_tokens_decoder"]) == len(table)


def test_post_processor_ids_are_remapped(vocab_parents: Path) -> None:
    """A template that appends a token whose id moves (here <start_of_audio>, 2047 in nano) gets the child id."""
    tokenizer_json = load_json(vocab_parents / "nano", "tokenizer.json")
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


def test_a_rare_token_in_a_config_must_be_kept(vocab_parents: Path) -> None:
    parent = vocab_parents / "nano"
    cut = cut_of(parent, [("a.txt", "the list")])
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


def test_vocab_size_below_the_required_ids(vocab_parents: Path, nano_corpus) -> None:
    required = cut_of(vocab_parents / "nano", nano_corpus).origin["required_text_ids"]
    with pytest.raises(UserError, match=f"below the {required} text ids every cut keeps.*--vocab-size {required}"):
        cut_of(vocab_parents / "nano", nano_corpus, required - 1)
    assert cut_of(vocab_parents / "nano", nano_corpus, required).child_text_vocab == required
    with pytest.raises(UserError, match="exceeds the parent's 2048 text ids"):
        cut_of(vocab_parents / "nano", nano_corpus, 4096)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t["model"].update(type="Unigram"), "the tokenizer is Unigram"),
        (lambda t: t["model"].update(byte_fallback=False), "BPE without byte fallback"),
        (lambda t: t["model"].update(ignore_merges=True), "sets ignore_merges"),
        (lambda t: t["added_tokens"].append({**t["added_tokens"][0], "id": 9999}), "vocab_size 2080"),
    ],
)
def test_unsupported_tokenizer(vocab_parents: Path, change, message: str) -> None:
    tokenizer_json = load_json(vocab_parents / "nano", "tokenizer.json")
    change(tokenizer_json)
    with pytest.raises(UserError, match=message):
        vocab.choose(tokenizer_json, [("a.txt", "the list")], text_vocab=2048, parent_vocab=2080)


def test_corpus_needing_tokens_outside_the_vocabulary(vocab_parents: Path) -> None:
    with pytest.raises(UserError, match="needs tokens outside the vocabulary.*'Привет'"):
        cut_of(vocab_parents / "tiny", [("ru.txt", "the cat Привет")])
    cut_of(vocab_parents / "tiny", [("ok.txt", "a literal <unk> is fine")])


def test_error_messages_are_one_line(vocab_parents: Path, nano_corpus) -> None:
    with pytest.raises(UserError) as caught:
        cut_of(vocab_parents / "nano", nano_corpus, 10)
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


def test_same_inputs_give_byte_identical_outputs(vocab_parents: Path, tmp_path: Path, nano_corpus) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(nano_corpus[0][1])
    digests = set()
    for seed in ("1", "2"):  # different hash seeds: set and dict order must not leak into the files
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", _DIGEST, str(vocab_parents / "nano"), str(corpus), "700"],
            capture_output=True, text=True, env=env, cwd=ROOT, check=True,
        )  # fmt: skip
        digests.add(result.stdout.strip())
    assert len(digests) == 1
    assert hashlib.sha256(b"").hexdigest() not in digests
