"""Shared fixtures: tiny random Gemma 3n checkpoints written once per test session, the default nano model and
its demo variants from the user cache (built once per machine), offline. Helper functions are in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_multimodal(tmp_path_factory) -> Path:
    from standins.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny") / "multimodal", seed=0)


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> Path:
    from standins.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny") / "text", text_only=True, seed=0)


@pytest.fixture(scope="session")
def nano_checkpoint() -> Path:
    """The default (trained nano) checkpoint from the user cache: trained once per machine, not per run."""
    from standins.default import default_checkpoint

    return default_checkpoint()


@pytest.fixture(scope="session")
def default_variants(nano_checkpoint: Path):
    """The demo's default variants (demo.variants.build_defaults), sliced and exported once into the user cache."""
    from demo.variants import build_defaults

    return build_defaults(checkpoint=nano_checkpoint)


@pytest.fixture(scope="session")
def tiny_text_graphs(tiny_text: Path) -> list:
    """The tiny text checkpoint's sessions traced once (the slow part of an export), for tests that write variants
    and bundles (`write_bundle(..., graphs=)`); the tests of tracing itself trace afresh."""
    from web_export.export import trace_sessions

    return trace_sessions(tiny_text)


@pytest.fixture(scope="session")
def tiny_multimodal_graphs(tiny_multimodal: Path) -> list:
    """Every session of the tiny multimodal checkpoint traced once (minutes: the vision tower), as above."""
    from web_export.export import trace_sessions

    return trace_sessions(tiny_multimodal)


@pytest.fixture(scope="session")
def vocab_parents(tiny_text: Path, nano_checkpoint: Path, tmp_path_factory) -> Path:
    """A folder holding `tiny` (the tiny text-only checkpoint) and `nano` (the default nano model), plus the
    nano model's corpus as `corpus/train.txt` and `corpus/held_out.txt`, one paragraph per line."""
    from standins.corpus import load_corpus

    folder = tmp_path_factory.mktemp("vocab")
    (folder / "tiny").symlink_to(tiny_text)
    (folder / "nano").symlink_to(nano_checkpoint.resolve())
    corpus = load_corpus()
    (folder / "corpus").mkdir()
    (folder / "corpus" / "train.txt").write_text("\n".join(corpus.train) + "\n")
    (folder / "corpus" / "held_out.txt").write_text("\n".join(corpus.held_out) + "\n")
    return folder


@pytest.fixture(scope="session")
def nano_corpus(vocab_parents: Path) -> list[tuple[str, str]]:
    """300 training paragraphs: a real subset of what the nano tokenizer was trained on."""
    lines = (vocab_parents / "corpus" / "train.txt").read_text().splitlines()
    return [("train-300.txt", "\n".join(lines[:300]) + "\n")]


@pytest.fixture(scope="session")
def held_out(vocab_parents: Path) -> list[str]:
    return (vocab_parents / "corpus" / "held_out.txt").read_text().splitlines()[:120]
