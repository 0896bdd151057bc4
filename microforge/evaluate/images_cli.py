"""``microforge eval images REAL FAKE``."""

from __future__ import annotations

import argparse


def register(eval_cmds: argparse._SubParsersAction) -> None:
    """Add ``eval images`` to the ``eval`` group's subcommands."""
