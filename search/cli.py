"""`matslice search`: registered once the search stage exists."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """No commands yet."""
