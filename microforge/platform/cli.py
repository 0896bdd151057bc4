"""The CLI root: ``microforge <group> <command>``.

Each subpackage owns its groups in a ``cli`` module with ``register(subparsers)``; this root only
lists those modules, so the platform never imports its dependants at module level and
``microforge --help`` stays fast (command modules import heavy libraries inside their handlers).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from typing import NoReturn

from .. import __version__
from .config import suggest
from .errors import MicroforgeError
from .logs import setup_logging

log = logging.getLogger("microforge")

# Modules that register command groups, in the order their groups appear in --help.
COMMAND_MODULES = (
    "microforge.datasets.cli",  # synth, data
    "microforge.trainers.cli",  # train
    "microforge.evaluate.cli",  # eval
    "microforge.generate.cli",  # generate
    "microforge.tune.cli",  # tune
    "microforge.serve.cli",  # serve, demo
    "microforge.cluster.cli",  # cluster
)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, with a did-you-mean for an unknown choice
    (an unknown workload, command or option value); subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        match = re.search(r"invalid choice: '?([^' ]*)'? \(choose from (.*)\)", message)
        if match:
            choices = re.findall(r"'([^']*)'", match.group(2)) or [c.strip() for c in match.group(2).split(",")]
            message = (f"{message[:match.start()]}invalid choice: '{match.group(1)}'"
                       f"{suggest(match.group(1), choices)}; valid: {', '.join(choices)}")
        self.exit(2, f"microforge: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="microforge",
        description="Synthetic microscopy data and the models trained on it, on Ray. "
        "Every command runs on an embedded local Ray unless --address or $RAY_ADDRESS names a cluster.",
    )
    parser.add_argument("--version", action="version", version=f"microforge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a missing dependency inside the module is a real error
                raise
            continue
        module.register(groups)
    return parser


def add_address_argument(parser: argparse.ArgumentParser) -> None:
    """``--address``: run on an existing Ray cluster instead of an embedded local Ray."""
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local Ray)",
    )


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # reads the workload registry, which plugins can break
    except MicroforgeError as exc:
        print(f"microforge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except MicroforgeError as exc:
        print(f"microforge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("microforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
