"""English text and a small Gemma-style BPE tokenizer for the nano model, both made offline.

Why this source: the nano model must learn from freely licensed English prose that is on every machine
the project runs on, with no download at build time. The CPython interpreter ships its own documentation:
``pydoc_data/topics.py`` (the Language Reference sections that ``help()`` prints) and the docstrings of
the pure-Python standard library. Both come with the interpreter package itself (python.org builds,
pyenv, Debian's ``libpython3.11-stdlib``), under the Python Software Foundation License 2.0, a permissive
free licence. Neither needs a package installed beside the project, so CI and a newcomer's first
``build_web`` have it too. About 0.9 MB of prose remains once code, grammar and tables are filtered out.

The text depends on the interpreter's version, so the corpus (and the nano model) is deterministic for one
Python version; ``corpus_fingerprint`` names it.

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

SPACE = "▁"
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
# Packages whose docstrings are mostly not prose (tests, generated tables, GUI demos, vendored code).
SKIPPED_PACKAGES = ("test", "idlelib", "lib2to3", "ensurepip", "turtledemo", "site-packages", "tkinter", "encodings")
HELD_OUT_EVERY = 20  # every 20th paragraph is held out for perplexity

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`([^`]*)`")  # reST roles such as :func:`len` -> len
_MARKUP = re.compile(r"[`*|\\]")


@dataclass(frozen=True)
class Corpus:
    """Training and held-out paragraphs, one paragraph per string, in a fixed order."""

    train: list[str]
    held_out: list[str]

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


def load_corpus() -> Corpus:
    """Every prose paragraph of the interpreter's documentation, deduplicated, split train / held-out."""
    seen: set[str] = set()
    unique = []
    for document in _topic_texts() + _docstring_texts():
        for paragraph in paragraphs(document):
            if paragraph not in seen:
                seen.add(paragraph)
                unique.append(paragraph)
    train = [p for i, p in enumerate(unique) if i % HELD_OUT_EVERY]
    held_out = [p for i, p in enumerate(unique) if not i % HELD_OUT_EVERY]
    return Corpus(train, held_out)


def source_note() -> str:
    """One line for the model card: where the text came from and under which licence."""
    version = ".".join(map(str, sys.version_info[:3]))
    return (
        f"CPython {version}'s bundled documentation (pydoc_data topics and standard-library docstrings), "
        "Python Software Foundation License 2.0"
    )


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
