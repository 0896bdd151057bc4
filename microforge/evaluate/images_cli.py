"""``microforge eval images REAL FAKE``: compare two image sets (see
:func:`microforge.evaluate.compare.compare_image_sets`)."""

from __future__ import annotations

import argparse

from ..platform.cli import add_address_argument


def register(eval_cmds: argparse._SubParsersAction) -> None:
    """Add ``eval images`` to the ``eval`` group's subcommands."""
    images = eval_cmds.add_parser(
        "images", help="compare two image sets (Fréchet distance, KID, texture and morphology statistics)",
        description="Compare two image sets (folders of .png/.tif/.tiff/.jpg, searched recursively, or "
        "microforge dataset directories): Fréchet distance and KID on a feature extractor, and per-statistic "
        "Wasserstein distances of texture and morphology statistics. Writes report.json, samples.png and "
        "histograms.png to --out. Images are measured on their full bit depth.")
    images.add_argument("real", metavar="REAL", help="the reference image set")
    images.add_argument("fake", metavar="FAKE", help="the image set to compare with it")
    images.add_argument("--out", required=True, help="report directory (created or replaced)")
    images.add_argument("--features", default="texture",
                        help="texture (default, offline), inception:WEIGHTS.pth (Inception-v3 from a local "
                        "weights file), or artifact:DIR:COMPONENT (pooled features of a model component)")
    images.add_argument("--max-images", type=int, default=None, help="use at most N images of each set")
    images.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (default 100)")
    images.add_argument("--kid-subset-size", type=int, default=1000,
                        help="images per KID subset (default 1000, capped at the smaller set's size)")
    images.add_argument("--workers", type=int, default=None,
                        help="parallel Ray Data workers; 0 measures in this process (default: in this process "
                        "up to 200 images in all, else every CPU of the Ray cluster)")
    add_address_argument(images)
    images.set_defaults(func=_eval_images)


def _eval_images(args: argparse.Namespace) -> int:
    from .compare import compare_image_sets

    report = compare_image_sets(args.real, args.fake, args.out, features=args.features,
                                max_images=args.max_images, kid_subsets=args.kid_subsets,
                                kid_subset_size=args.kid_subset_size, workers=args.workers,
                                address=args.address)
    print(f"report: {args.out}/report.json ({report['real']['images']} real, {report['fake']['images']} fake "
          f"images, features {report['features']})")
    print(f"Fréchet distance: {report['frechet_distance']:.4f}  KID: {report['kid_mean']:.5f} "
          f"± {report['kid_std']:.5f}")
    closest = sorted(report["statistic_distances"].items(), key=lambda kv: -(kv[1] or 0))[:3]
    print("largest statistic distances (Wasserstein): "
          + ", ".join(f"{name} {value:.4g}" for name, value in closest if value is not None))
    print(f"time: {report['seconds']:.1f} s")
    return 0
