"""``microforge synth cars``."""

from __future__ import annotations

import argparse


def register(kinds: argparse._SubParsersAction) -> None:
    """Add ``synth cars`` to the ``synth`` group's subcommands."""
