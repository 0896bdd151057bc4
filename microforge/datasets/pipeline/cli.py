"""``microforge data prepare|enhance|fix|analyze|split``."""

from __future__ import annotations

import argparse


def register(data_cmds: argparse._SubParsersAction) -> None:
    """Add the pipeline commands to the ``data`` group's subcommands."""
