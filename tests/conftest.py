"""Shared fixtures: tiny random Gemma 3n checkpoints written once per test session, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_multimodal(tmp_path_factory) -> Path:
    from slicer.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny") / "multimodal", seed=0)


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> Path:
    from slicer.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny") / "text", text_only=True, seed=0)
