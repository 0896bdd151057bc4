"""CLI group ``eval``: ``eval images`` (image-set comparison), ``eval diffusion`` (phase-conditional
DDPM images against real frames) and ``eval <workload>`` for every registered workload that declares
an eval command."""

from __future__ import annotations

import argparse

from ..platform.cli import add_address_argument
from ..platform.imports import import_object
from ..trainers.workload import workloads
from . import diffusion_cli, images_cli


def register(groups: argparse._SubParsersAction) -> None:
    evaluate = groups.add_parser("eval", help="evaluate trained models and image sets")
    eval_cmds = evaluate.add_subparsers(dest="command", metavar="COMMAND", required=True)
    images_cli.register(eval_cmds)
    diffusion_cli.register(eval_cmds)
    for workload in workloads().values():
        if workload.evaluate:
            parser = eval_cmds.add_parser(workload.name, aliases=list(workload.aliases),
                                          help=f"evaluate a {workload.name} artifact")
            import_object(workload.evaluate, f"eval command of workload '{workload.name}'")(parser)
            add_address_argument(parser)
