"""Vocabulary slicing: keep the tokens a corpus needs, so that text it covers tokenizes exactly as before.

Why this exists: Gemma 3n's two embedding tables (``embed_tokens`` 262,400 x H and ``embed_tokens_per_layer``
262,144 x L*P, plus the tied LM head) dominate a small slice's bytes. A browser bundle that serves one
language or one domain needs a few thousand of those rows. Cutting rows is only safe if the tokenizer is cut
consistently: the child must split covered text into exactly the parent's tokens (then its logits at the kept
ids are the parent's), and must still encode any other text losslessly.

How Gemma's tokenizer runs (tokenizer.json, and the pipeline transformers 5's GemmaTokenizer rebuilds):
added tokens are matched first on the raw text (all specials, but also ``\\n`` runs, ``▁`` runs, tab runs,
HTML tags and the ``<unusedN>`` placeholders); the normalizer turns spaces into ``▁``; the pre-tokenizer
splits on ``" "``, which no longer occurs after the normalizer, so BPE runs on each whole segment between
added tokens; the model is BPE with ``byte_fallback`` (a character outside the vocabulary becomes its UTF-8
``<0xNN>`` tokens), ``fuse_unk`` and ``ignore_merges: false``; the decoder maps ``▁`` back to spaces and fuses
byte tokens.

Why the cut is exact. BPE repeatedly applies, among adjacent symbol pairs, the merge of lowest rank (ties:
leftmost). A merge never splits a symbol, so the merges that build one final token all lie inside its span,
and they happen in the same order as when BPE runs on that token's characters alone. So the pieces a token
is built from are a property of the token, not of its context: ``_Bpe.pieces`` computes them once per token.
Let the kept set K contain, with every BPE-reachable token, all its pieces, and let the child keep exactly
the parent merges whose two parts and result are in K, at the same relative ranks. On any text whose parent
tokens all lie in K, every merge the parent applies is a child merge, and every child merge is a parent
merge, so at each step the child's lowest-ranked applicable merge is the parent's: same symbols, same tokens.
This holds for any text, not only the corpus: "covered text" is text whose parent tokens are kept. Text with
dropped tokens falls apart into kept pieces and finally byte tokens (always kept), so it stays lossless. The
closure never depends on how the corpus was split into words, which is why the corpus is encoded by the
parent tokenizer itself (``tokenizers``) and only single tokens are simulated in Python.

Layout (as Gemma 3n's config defines it): text ids are ``[0, vocab_size_per_layer_input)``; the vision and
audio soft-token blocks follow up to ``vocab_size``. The child keeps a subset of the text ids in parent order
and both multimodal blocks whole, right after them; a child id is the position in that list.

Pure Python plus ``tokenizers`` (no torch), deterministic: the same inputs give byte-identical outputs.
Every input problem raises ``UserError`` with one line naming the problem and the fix.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from gemma3n.errors import UserError

__all__ = [
    "BYTE_TOKENS",
    "VocabCut",
    "choose",
    "dumps",
    "prune_tokenizer",
    "read_corpus",
    "remap_config",
    "remap_tokenizer_config",
    "vocab_layout",
    "vocab_map_json",
    "cut_for",
    "summary",
]

BYTE_TOKENS: tuple[str, ...] = tuple(f"<0x{b:02X}>" for b in range(256))
PLACEHOLDER = re.compile(r"<unused\d+>")
# Token-id fields of Gemma 3n's config.json (top level or text_config) and generation_config.json.
TOKEN_ID_FIELDS = (
    "bos_token_id", "eos_token_id", "pad_token_id", "boi_token_id", "eoi_token_id", "boa_token_id",
    "eoa_token_id", "image_token_id", "audio_token_id",
)  # fmt: skip


# --- The cut ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VocabCut:
    """Which parent ids a child keeps: the kept text ids, then the multimodal blocks whole.

    ``text_ids`` are kept parent text ids, ascending; ids in ``[parent_text_vocab, parent_vocab)`` (vision and
    audio soft-token blocks) are always kept, after them. ``origin`` records where the set came from (corpus
    names and sizes, how many ids each rule kept) for the model card and ``vocab_map.json``.
    """

    text_ids: tuple[int, ...]
    parent_text_vocab: int
    parent_vocab: int
    origin: dict[str, Any]

    @property
    def child_text_vocab(self) -> int:
        """The child's ``vocab_size_per_layer_input``."""
        return len(self.text_ids)

    @property
    def child_vocab(self) -> int:
        """The child's ``vocab_size``: kept text ids plus both multimodal blocks."""
        return len(self.text_ids) + self.parent_vocab - self.parent_text_vocab

    @cached_property
    def parent_ids(self) -> tuple[int, ...]:
        """Parent id of every child id, in child order (the content of ``vocab_map.json``)."""
        return self.text_ids + tuple(range(self.parent_text_vocab, self.parent_vocab))

    @cached_property
    def _child_of(self) -> dict[int, int]:
        return {parent: child for child, parent in enumerate(self.parent_ids)}

    def parent_of(self, child_id: int) -> int:
        """The parent id of a child id (rows to copy from the parent's embeddings)."""
        if not 0 <= child_id < self.child_vocab:
            raise IndexError(f"child id {child_id} is outside the child's {self.child_vocab} ids")
        return self.parent_ids[child_id]

    def child_of(self, parent_id: int) -> int | None:
        """The child id of a parent id, or None when the cut dropped it."""
        return self._child_of.get(parent_id)

    def remap_id(self, parent_id: int, what: str = "token id") -> int:
        """The child id of a parent id the child must have (a config's token id); UserError if dropped."""
        child = self.child_of(parent_id)
        if child is None:
            raise UserError(
                f"{what} {parent_id} is an ordinary token the vocabulary cut dropped; "
                "add text containing it to --vocab-corpus or raise --vocab-size"
            )
        return child


# --- Corpus ----------------------------------------------------------------------------------------------
def read_corpus(paths: Sequence[Path | str]) -> list[tuple[str, str]]:
    """Read ``--vocab-corpus`` paths: each a UTF-8 text file, or a folder whose ``.txt`` files (recursive) count.

    Returns ``(name, text)`` pairs in a fixed order (paths as given; a folder's files sorted by relative path),
    texts exactly as stored (no newline translation), because line ends and spacing change tokenization.
    """
    if not paths:
        raise UserError("no --vocab-corpus given; pass a text file or a folder of .txt files")
    corpus: list[tuple[str, str]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted((p for p in path.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(path).parts)
            if not files:
                raise UserError(f"--vocab-corpus folder {given} holds no .txt files; add some or pass text files")
            named = [(f"{Path(given).as_posix()}/{p.relative_to(path).as_posix()}", p) for p in files]
        elif path.exists():
            named = [(Path(given).as_posix(), path)]
        else:
            raise UserError(f"--vocab-corpus {given} does not exist; pass a text file or a folder of .txt files")
        for name, file in named:
            try:
                text = file.read_bytes().decode("utf-8")
            except OSError as error:
                raise UserError(f"cannot read --vocab-corpus file {name} ({error.strerror}); check the path") from None
            except UnicodeDecodeError:
                raise UserError(f"--vocab-corpus file {name} is not UTF-8 text; convert it to UTF-8") from None
            corpus.append((name, text))
    if not any(text.strip() for _, text in corpus):
        raise UserError("the --vocab-corpus text is empty; pass text in the language the child must handle")
    return corpus


# --- Parent tokenizer ------------------------------------------------------------------------------------
class _Bpe:
    """The parent's tokenizer.json, checked, with a Python BPE that runs on single tokens.

    Only the model matters here (vocab, merges, byte fallback); normalization, pre-tokenization and added-token
    matching are left to the ``tokenizers`` library when the corpus is encoded, so they need no simulation.
    """

    def __init__(self, tokenizer_json: dict[str, Any], text_vocab: int, parent_vocab: int) -> None:
        model = tokenizer_json.get("model") or {}
        if model.get("type") != "BPE" or not model.get("byte_fallback"):
            kind = model.get("type", "unknown") + ("" if model.get("byte_fallback") else " without byte fallback")
            raise UserError(
                f"the tokenizer is {kind}; vocabulary slicing needs a BPE tokenizer with byte_fallback (Gemma's); "
                "slice without --vocab-corpus"
            )
        unsupported = [
            key for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout", "ignore_merges")
            if model.get(key)
        ]  # fmt: skip
        if unsupported:
            raise UserError(
                f"the BPE tokenizer sets {', '.join(unsupported)}, which vocabulary slicing does not model; "
                "slice without --vocab-corpus"
            )
        if not 0 < text_vocab <= parent_vocab:
            raise UserError(f"vocab_size_per_layer_input {text_vocab} must lie in 1..vocab_size ({parent_vocab})")
        self.vocab: dict[str, int] = dict(model["vocab"])
        self.merges: list[tuple[str, str]] = [
            tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in model.get("merges", [])
        ]
        # A repeated pair keeps its last rank, as in the tokenizers library and transformers.js (map insertion).
        self.ranks: dict[tuple[str, str], int] = {pair: rank for rank, pair in enumerate(self.merges)}
        self.unk: str | None = model.get("unk_token")
        self.added: dict[int, dict[str, Any]] = {entry["id"]: entry for entry in tokenizer_json.get("added_tokens", [])}
        self.token: dict[int, str] = {i: token for token, i in self.vocab.items()}
        for i, entry in self.added.items():
            if self.token.setdefault(i, entry["content"]) != entry["content"]:
                raise UserError(f"tokenizer.json gives id {i} to two tokens; repair the parent's tokenizer")
        if sorted(self.token) != list(range(parent_vocab)):
            raise UserError(
                f"tokenizer.json defines {len(self.token)} ids (largest {max(self.token)}) but the model has "
                f"vocab_size {parent_vocab}; every model id needs exactly one token"
            )
        if sorted(self.vocab.values()) != list(range(len(self.vocab))):
            raise UserError(
                "tokenizer.json has added-only tokens below model-vocabulary ids, which transformers renumbers on "
                "load; move them into model.vocab"
            )
        self._pieces: dict[str, frozenset[str] | None] = {}

    def split(self, word: str) -> list[str]:
        """The initial symbols of a word, as the tokenizers library makes them (characters, else byte tokens)."""
        symbols: list[str] = []
        for char in word:
            if char in self.vocab:
                symbols.append(char)
                continue
            fallback = [f"<0x{b:02X}>" for b in char.encode()]
            if all(token in self.vocab for token in fallback):
                symbols.extend(fallback)
            elif self.unk is not None and not (symbols and symbols[-1] == self.unk):  # fuse_unk
                symbols.append(self.unk)
        return symbols

    def run(self, word: str) -> tuple[list[str], set[str]]:
        """BPE on one word: its final tokens, and every symbol that existed on the way (final ones included)."""
        symbols = self.split(word)
        seen = set(symbols)
        while len(symbols) > 1:
            best_rank, best = -1, -1
            for i in range(len(symbols) - 1):
                rank = self.ranks.get((symbols[i], symbols[i + 1]), -1)
                if rank >= 0 and (best < 0 or rank < best_rank):
                    best_rank, best = rank, i
            if best < 0:
                break
            merged = symbols[best] + symbols[best + 1]
            symbols[best : best + 2] = [merged]
            seen.add(merged)
        return symbols, seen

    def pieces(self, token: str) -> frozenset[str] | None:
        """Every symbol BPE passes through when it builds ``token`` (itself included), or None if BPE cannot
        build it (an added token such as ``<unused7>``, only ever produced by added-token matching)."""
        if token not in self._pieces:
            final, seen = self.run(token)
            self._pieces[token] = frozenset(seen) if final == [token] else None
        return self._pieces[token]


# --- Choosing the kept set -------------------------------------------------------------------------------
def choose(
    tokenizer_json: dict[str, Any],
    corpus: Sequence[tuple[str, str]],
    *,
    text_vocab: int,
    parent_vocab: int,
    vocab_size: int | None = None,
    keep_placeholders: bool = True,
) -> VocabCut:
    """Pick the kept text ids: required tokens, then the corpus's tokens (most frequent first), closed under BPE.

    Required, whatever the corpus: id 0, every added token with a text id (specials, ``<start_of_turn>``, newline
    and space runs, HTML tags, ``<unusedN>`` placeholders), the 256 ``<0xNN>`` byte tokens, and every
    single-character token whose UTF-8 bytes lack byte tokens (all of them in the tiny test tokenizer, which has
    none), so the child encodes losslessly whatever the parent does. Their BPE pieces are required too (``▁▁``
    needs ``▁``). A ``vocab_size`` below the required count is refused before the corpus is encoded.

    The corpus is encoded by the parent tokenizer (``tokenizers``, one string per corpus file, no BOS) and each
    distinct token is counted. Without ``vocab_size`` every emitted token is kept with its pieces. With it
    (a cap on kept text ids, required ones included), candidates are the emitted tokens ranked by count,
    descending, ties by parent id; each is taken together with those of its pieces not yet kept if the total
    stays within the cap, and skipped otherwise (a later, cheaper candidate may still fit). Every kept token's
    pieces are therefore kept, which is what makes the cut exact (module docstring).

    ``keep_placeholders=False`` drops the ``<unusedN>`` added tokens that are not special (6,242 of Gemma's
    text ids); literal ``<unusedN>`` text then tokenizes as ordinary text.
    """
    bpe = _Bpe(tokenizer_json, text_vocab, parent_vocab)
    if not corpus or not any(text.strip() for _, text in corpus):
        raise UserError("the --vocab-corpus text is empty; pass text in the language the child must handle")

    # 1. Required ids, and their pieces.
    special = {
        i for i, entry in bpe.added.items()
        if i < text_vocab and (keep_placeholders or entry["special"] or not PLACEHOLDER.fullmatch(entry["content"]))
    }  # fmt: skip
    present_bytes = {bpe.vocab[token] for token in BYTE_TOKENS if token in bpe.vocab}
    characters = {  # characters that cannot fall back to byte tokens must stay whole
        i for token, i in bpe.vocab.items()
        if len(token) == 1 and i < text_vocab and not all(f"<0x{b:02X}>" in bpe.vocab for b in token.encode())
    }  # fmt: skip
    kept: set[int] = set()
    # Id 0 (<pad>) too, whatever the tokenizer calls it: Gemma 3n feeds ids >= vocab_size_per_layer_input (the
    # multimodal blocks) per-layer embedding row 0, so the child's row 0 must stay the parent's.
    for i in sorted(special | present_bytes | characters | {0}):
        kept |= _closure(bpe, i)
    required = len(kept)

    if vocab_size is not None:
        if vocab_size > text_vocab:
            raise UserError(
                f"--vocab-size {vocab_size} exceeds the parent's {text_vocab} text ids; use a smaller value or omit it"
            )
        if vocab_size < required:
            raise UserError(
                f"--vocab-size {vocab_size} is below the {required} text ids every cut keeps (special and added "
                f"tokens, byte tokens and their pieces); use --vocab-size {required} or more"
            )

    # 2. The parent's tokens on the corpus.
    counts, corpus_record = _encode(tokenizer_json, corpus, bpe)
    emitted = sorted((i for i in counts if i < text_vocab and i not in kept), key=lambda i: (-counts[i], i))

    # 3. Select under the cap.
    cap = text_vocab if vocab_size is None else vocab_size
    dropped = 0
    for i in emitted:
        if i in kept:
            continue
        need = _closure(bpe, i, emitted=True) - kept
        if len(kept) + len(need) <= cap:
            kept |= need
        else:
            dropped += 1

    text_ids = tuple(sorted(kept))
    emitted_text = {i for i in counts if i < text_vocab}
    rules = [("special", special), ("bytes", present_bytes), ("characters", characters), ("emitted", emitted_text)]
    by_rule, counted = {}, set()
    for rule, ids in rules:
        by_rule[rule] = len((ids & kept) - counted)
        counted |= ids
    by_rule["pieces"] = len(kept - counted)
    total_tokens = sum(counts.values())
    covered_tokens = sum(n for i, n in counts.items() if i in kept or i >= text_vocab)
    origin = {
        "corpus": corpus_record,
        "vocab_size": vocab_size,
        "keep_placeholders": keep_placeholders,
        "parent_text_vocab": text_vocab,
        "parent_vocab": parent_vocab,
        "kept_text_ids": len(text_ids),
        "required_text_ids": required,
        "kept_by_rule": by_rule,
        "emitted_distinct": len(emitted_text),
        "emitted_dropped": dropped,
        "covered_token_fraction": round(covered_tokens / total_tokens, 6) if total_tokens else 1.0,
    }
    return VocabCut(text_ids, text_vocab, parent_vocab, origin)


def _closure(bpe: _Bpe, token_id: int, emitted: bool = False) -> set[int]:
    """The id and the ids of the pieces BPE builds it from (just the id for tokens BPE cannot build).

    A token the parent's BPE emitted (``emitted``, not an added token) must be buildable alone; if the Python
    BPE cannot rebuild it, it disagrees with the tokenizers library, and the cut would not be exact: a bug.
    """
    token = bpe.token[token_id]
    pieces = bpe.pieces(token) if bpe.vocab.get(token) == token_id else None
    if pieces is None and emitted and token_id not in bpe.added:
        raise AssertionError(
            f"BPE does not rebuild the emitted token {token!r} alone; vocab.py disagrees with tokenizers"
        )
    return {token_id} | ({bpe.vocab[p] for p in pieces} if pieces else set())


def _encode(
    tokenizer_json: dict[str, Any], corpus: Sequence[tuple[str, str]], bpe: _Bpe
) -> tuple[Counter[int], list[dict[str, Any]]]:
    """Token counts of the corpus under the parent tokenizer, and one record per corpus file.

    Each file is encoded as one string, so merges across its lines and paragraphs happen as at inference.
    A corpus that needs ``<unk>`` (a character with no token and no byte tokens) is refused: the parent
    cannot represent it either, so no cut can cover it.
    """
    from tokenizers import Tokenizer  # here: `plan` imports this module for its data types only

    tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json))
    encodings = tokenizer.encode_batch([text for _, text in corpus], add_special_tokens=False)
    unk_id = bpe.vocab.get(bpe.unk) if bpe.unk is not None else None
    counts: Counter[int] = Counter()
    record = []
    for (name, text), encoding in zip(corpus, encodings, strict=True):
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
            if token_id == unk_id and text[start:end] != bpe.unk:  # a literal "<unk>" in the text is fine
                raise UserError(
                    f"--vocab-corpus file {name} needs tokens outside the vocabulary: the parent tokenizer encodes "
                    f"{text[start:end]!r} (character {start}) as {bpe.unk}; remove such text from the corpus"
                )
        counts.update(encoding.ids)
        data = text.encode()
        record.append({"name": name, "bytes": len(data), "characters": len(text), "tokens": len(encoding),
                       "sha256": hashlib.sha256(data).hexdigest()})
    return counts, record


# --- Writing the child -----------------------------------------------------------------------------------
def prune_tokenizer(tokenizer_json: dict[str, Any], cut: VocabCut) -> dict[str, Any]:
    """The child's tokenizer.json: kept tokens at child ids, the parent merges among them in the same order.

    ``model.vocab`` keeps the kept model tokens (renumbered); ``model.merges`` keeps a merge when both parts and
    the result are kept, in the parent's order and format; ``added_tokens`` keep their flags with child ids;
    the post-processor's and padding's token ids are remapped. Normalizer, pre-tokenizer and decoder do not
    hold ids and are copied unchanged.
    """
    _check_cut(tokenizer_json, cut)
    child = copy.deepcopy({key: value for key, value in tokenizer_json.items() if key != "model"})
    model = {key: value for key, value in tokenizer_json["model"].items() if key not in ("vocab", "merges")}
    vocab = tokenizer_json["model"]["vocab"]
    kept_tokens = {}
    for token, parent_id in sorted(vocab.items(), key=lambda item: item[1]):
        child_id = cut.child_of(parent_id)
        if child_id is not None:
            kept_tokens[token] = child_id
    merges = []
    for merge in tokenizer_json["model"].get("merges", []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        if left in kept_tokens and right in kept_tokens and left + right in kept_tokens:
            merges.append(copy.copy(merge))
    model["vocab"] = kept_tokens
    model["merges"] = merges
    child["model"] = model
    added = []
    for entry in tokenizer_json.get("added_tokens", []):
        child_id = cut.child_of(entry["id"])
        if child_id is not None:
            added.append({**entry, "id": child_id})
    child["added_tokens"] = sorted(added, key=lambda entry: entry["id"])
    if child.get("post_processor"):
        child["post_processor"] = _remap_processor(child["post_processor"], cut)
    if isinstance(child.get("padding"), dict) and "pad_id" in child["padding"]:
        child["padding"]["pad_id"] = cut.remap_id(child["padding"]["pad_id"], "tokenizer.json padding pad_id")
    # Keep the parent's key order, so the file reads like the parent's.
    return {key: child[key] for key in tokenizer_json}


def _check_cut(tokenizer_json: dict[str, Any], cut: VocabCut) -> None:
    ids = set(tokenizer_json["model"]["vocab"].values()) | {e["id"] for e in tokenizer_json.get("added_tokens", [])}
    if ids != set(range(cut.parent_vocab)):
        raise UserError(
            f"the vocabulary cut was chosen for {cut.parent_vocab} ids but this tokenizer.json has {len(ids)}; "
            "choose the cut from this tokenizer"
        )


def _remap_processor(processor: dict[str, Any], cut: VocabCut) -> dict[str, Any]:
    """Post-processors name special tokens by string and by id; the ids move with the cut."""
    kind = processor.get("type")
    if kind == "Sequence":
        return {**processor, "processors": [_remap_processor(p, cut) for p in processor["processors"]]}
    if kind == "TemplateProcessing":
        specials = {
            name: {**spec, "ids": [cut.remap_id(i, f"post-processor token {name}") for i in spec["ids"]]}
            for name, spec in processor.get("special_tokens", {}).items()
        }
        return {**processor, "special_tokens": specials}
    if kind in ("BertProcessing", "RobertaProcessing"):
        return {
            **processor,
            **{key: [processor[key][0], cut.remap_id(processor[key][1])] for key in ("sep", "cls") if key in processor},
        }
    return processor


def remap_tokenizer_config(tokenizer_config: dict[str, Any], cut: VocabCut) -> dict[str, Any]:
    """The child's tokenizer_config.json: ``added_tokens_decoder`` keyed by child ids; names stay.

    transformers 5 rebuilds GemmaTokenizer from tokenizer.json's vocab and merges and re-adds added tokens from
    this table (not from tokenizer.json), so its ids must agree with the pruned tokenizer.json. Special-token
    names (``bos_token``, ``boi_token``, ...) and the chat template refer to tokens by string and need no change.
    """
    child = copy.deepcopy(tokenizer_config)
    table = tokenizer_config.get("added_tokens_decoder")
    if isinstance(table, dict):
        remapped = {}
        for key, entry in table.items():
            child_id = cut.child_of(int(key))
            if child_id is not None:
                remapped[child_id] = entry
        child["added_tokens_decoder"] = {str(i): remapped[i] for i in sorted(remapped)}
    return child


def vocab_layout(config: dict[str, Any]) -> tuple[int, int]:
    """``(text ids, all ids)`` of a Gemma 3n config.json: multimodal (``text_config``) or gemma3n_text."""
    text = config.get("text_config", config)
    try:
        return int(text["vocab_size_per_layer_input"]), int(text["vocab_size"])
    except (KeyError, TypeError, ValueError):
        raise UserError("config.json has no vocab_size / vocab_size_per_layer_input; is this Gemma 3n?") from None


def remap_config(config: dict[str, Any], cut: VocabCut) -> dict[str, Any]:
    """config.json or generation_config.json with every token id and vocabulary size moved to the child.

    Handles the multimodal config (top level, ``text_config``, ``vision_config``, ``audio_config``) and the
    text-only one (``model_type`` gemma3n_text, flat). Token ids (bos/eos/pad, int or list; boi/eoi/boa/eoa;
    image/audio soft token) are remapped, ``vocab_size`` and ``vocab_size_per_layer_input`` become the child's,
    and each multimodal block's ``vocab_offset`` moves down by the number of dropped text ids.
    """
    child = copy.deepcopy(config)
    for name, section in [("config", child), *((key, child.get(key)) for key in ("text_config",))]:
        if isinstance(section, dict):
            _remap_ids(section, cut, name)
    text = child.get("text_config", child)
    if "vocab_size" in text or "vocab_size_per_layer_input" in text:
        if vocab_layout(text) != (cut.parent_text_vocab, cut.parent_vocab):
            raise UserError(
                f"config.json's vocab_size_per_layer_input / vocab_size {vocab_layout(text)} differ from the "
                f"tokenizer's ({cut.parent_text_vocab}, {cut.parent_vocab}); the folder mixes two models"
            )
        text["vocab_size"] = cut.child_vocab
        text["vocab_size_per_layer_input"] = cut.child_text_vocab
    for key in ("vision_config", "audio_config"):
        section = child.get(key)
        if isinstance(section, dict) and "vocab_offset" in section:
            offset = section["vocab_offset"]
            if not cut.parent_text_vocab <= offset < cut.parent_vocab:
                raise UserError(
                    f"{key}.vocab_offset {offset} is not in the multimodal id range "
                    f"[{cut.parent_text_vocab}, {cut.parent_vocab}); the config is not Gemma 3n's layout"
                )
            section["vocab_offset"] = cut.remap_id(offset, f"{key}.vocab_offset")
    return child


def _remap_ids(section: dict[str, Any], cut: VocabCut, name: str) -> None:
    for key in TOKEN_ID_FIELDS:
        value = section.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            section[key] = cut.remap_id(value, f"{name} {key}")
        elif isinstance(value, list):
            section[key] = [cut.remap_id(v, f"{name} {key}") for v in value]


# --- Files -----------------------------------------------------------------------------------------------
def dumps(obj: Any) -> str:
    """JSON as the child's files are written: UTF-8 text, indent 2, insertion order, trailing newline."""
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


REWRITTEN_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")  # the side files a cut remaps


def rewrite_file(name: str, text: str, cut: VocabCut) -> str:
    """One of REWRITTEN_FILES as the child holds it: remapped to the child's ids."""
    rewrite = {"tokenizer.json": prune_tokenizer, "tokenizer_config.json": remap_tokenizer_config,
               "generation_config.json": remap_config}[name]
    return dumps(rewrite(json.loads(text), cut))


def vocab_map_json(cut: VocabCut) -> str:
    """``vocab_map.json``: ``parent_ids`` lists the parent id of each child id; ``origin`` says where they came from.

    The id list is written on one line: at 16k-262k ids one number per line would triple the file for nothing.
    """
    head = dumps({"origin": cut.origin, "parent_ids": None})
    return head.replace('"parent_ids": null', '"parent_ids": [' + ", ".join(map(str, cut.parent_ids)) + "]")


def cut_for(folder: Path, text_vocab: int, parent_vocab: int, corpus_paths: Sequence[Path | str],
            vocab_size: int | None, keep_placeholders: bool = True) -> VocabCut:
    """The cut of the checkpoint at `folder` (its tokenizer.json) for the `--vocab-corpus` files."""
    corpus = read_corpus(corpus_paths)  # first: a bad corpus is the likelier mistake, and cheaper to report
    path = Path(folder) / "tokenizer.json"
    try:
        tokenizer_json = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} has no tokenizer.json, which --vocab-corpus cuts: pass the checkpoint folder "
                        "(not its config.json), with its tokenizer files") from None
    except (OSError, ValueError):
        raise UserError(f"{path} is not a readable tokenizer.json: restore it from the checkpoint") from None
    return choose(tokenizer_json, corpus, text_vocab=text_vocab, parent_vocab=parent_vocab, vocab_size=vocab_size,
                  keep_placeholders=keep_placeholders)


def summary(cut: VocabCut) -> dict[str, Any]:
    """What a child's config.json, the manifest and the page say of its vocabulary."""
    origin = cut.origin
    return {"kept_text_ids": cut.child_text_vocab, "parent_text_ids": cut.parent_text_vocab,
            "vocab_size": origin["vocab_size"], "keep_placeholders": origin["keep_placeholders"],
            "corpus": [{k: c[k] for k in ("name", "bytes", "tokens")} for c in origin["corpus"]],
            "covered_token_fraction": origin["covered_token_fraction"], "kept_by_rule": origin["kept_by_rule"]}
