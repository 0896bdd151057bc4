"""``microforge synth unaligned``."""

from __future__ import annotations

import argparse

from ...platform.cli import add_address_argument


def register(kinds: argparse._SubParsersAction) -> None:
    """Add ``synth unaligned`` to the ``synth`` group's subcommands."""
    cmd = kinds.add_parser("unaligned", help="two unpaired domains for colorization: grayscale fluorescence-like "
                                             "cells with masks (A) and H&E-like RGB tissue (B)")
    cmd.add_argument("--config", default=None, help="a JSON/YAML renderer config file (default: built-in)")
    cmd.add_argument("--n", type=int, required=True, help="number of samples (one A, its mask and one B each)")
    cmd.add_argument("--out", required=True, help="dataset directory (trainA/, trainA_GT/, trainB/, testA/...)")
    cmd.add_argument("--size", type=int, default=None, help="image side in px (default 128)")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--workers", type=int, default=None,
                     help="parallel render tasks (default: every CPU of the Ray cluster)")
    cmd.add_argument("--split", default="0.8,0,0.2", help="train,val,test fractions (default 0.8,0,0.2)")
    cmd.add_argument("--overwrite", action="store_true", help="replace a dataset made with another configuration")
    add_address_argument(cmd)
    cmd.set_defaults(func=_synth_unaligned)


def _synth_unaligned(args: argparse.Namespace) -> int:
    from ..writer import parse_split
    from .dataset import generate_dataset

    summary = generate_dataset(args.config, args.n, args.out, seed=args.seed, size=args.size,
                               split=parse_split(args.split), workers=args.workers, overwrite=args.overwrite,
                               address=args.address)
    print(summary.report("binary nucleus masks of domain A in <split>A_GT/ (paired by file stem)"))
    return 0
