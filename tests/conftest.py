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
    """The tiny text checkpoint's sessions traced once (the slow part of an export), for tests that write variants."""
    from web_export.export import trace_sessions

    return trace_sessions(tiny_text)
