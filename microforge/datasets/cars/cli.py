"""``microforge synth cars``."""

from __future__ import annotations

import argparse

from ...platform.cli import add_address_argument
from ..output_args import add_output_arguments, output_kwargs


def register(kinds: argparse._SubParsersAction) -> None:
    """Add ``synth cars`` to the ``synth`` group's subcommands."""
    cars = kinds.add_parser("cars", help="16-bit CARS thyroid tissue with follicle instance masks")
    cars.add_argument("--preset", default="default",
                      help="preset name (default, dense, sparse, low_signal) or a JSON/YAML config file")
    cars.add_argument("--n", type=int, required=True, help="number of images")
    add_output_arguments(cars)
    cars.add_argument("--size", type=int, default=None, help="image side in px (default: the preset's)")
    cars.add_argument("--seed", type=int, default=0)
    cars.add_argument("--workers", type=int, default=None,
                      help="parallel render tasks (default: every CPU of the Ray cluster)")
    cars.add_argument("--format", dest="image_format", choices=("png", "tif"), default="png",
                      help="16-bit file format of images and masks")
    cars.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions")
    cars.add_argument("--overwrite", action="store_true",
                      help="replace a dataset made with another configuration")
    add_address_argument(cars)
    cars.set_defaults(func=_synth_cars)


def _synth_cars(args: argparse.Namespace) -> int:
    from ..writer import parse_split
    from .config import load_preset
    from .dataset import generate_dataset

    summary = generate_dataset(
        load_preset(args.preset), args.n, args.out, seed=args.seed, size=args.size,
        image_format=args.image_format, split=parse_split(args.split), workers=args.workers,
        overwrite=args.overwrite, address=args.address, **output_kwargs(args),
    )
    counts = summary.counts
    print(summary.report(f"{counts['follicles']} follicles in masks/ and the manifest's follicles column; "
                         f"bright-pixel fraction mean {counts['bright_fraction_mean']:.4f}, "
                         f"max {counts['bright_fraction_max']:.4f}"))
    return 0
