"""``microforge eval cyclegan --run RUN_DIR``: score every epoch (see :mod:`microforge.evaluate.cyclegan`)."""

from __future__ import annotations

import argparse

from .cyclegan import SELECT


def register(parser: argparse.ArgumentParser) -> None:
    """Set up ``eval cyclegan`` (the workload's ``evaluate`` hook; the group adds ``--address``)."""
    parser.description = ("Score every epoch snapshot of a CycleGAN run on its test set, in parallel as Ray tasks "
                          "(GT Dice, structure SSIM, HSV histogram correlation, texture Fréchet distance), pick "
                          "the best epoch and export it.")
    parser.add_argument("--run", required=True, help="the run directory")
    parser.add_argument("--workers", type=int, default=None, help="epochs scored at once (default: every CPU)")
    parser.add_argument("--select", default="rank", choices=SELECT,
                        help="what picks the best epoch: the mean rank of the four scores (default) or one score")
    parser.add_argument("--max-images", type=int, default=None, help="score at most N test images")
    parser.add_argument("--out", default=None, help="report directory (default RUN/eval; replaced)")
    parser.set_defaults(func=_eval_cyclegan)


def _eval_cyclegan(args: argparse.Namespace) -> int:
    from .cyclegan import SCORES, evaluate_run

    report = evaluate_run(args.run, out=args.out, workers=args.workers, select=args.select,
                          max_images=args.max_images, address=args.address)
    print(f"{'epoch':>6} " + " ".join(f"{name:>8}" for name in SCORES) + ("  mean rank" if args.select == "rank" else ""))
    for row in report["epochs"]:
        rank = f"  {row['mean_rank']:9.2f}" if "mean_rank" in row else ""
        mark = "  <- best" if row["epoch"] == report["best_epoch"] else ""
        print(f"{row['epoch']:>6} " + " ".join(f"{row[name]:8.4f}" for name in SCORES) + rank + mark)
    print(f"{len(report['epochs'])} epochs on {report['test_images']} test images in {report['seconds']:.1f} s "
          f"({report['workers']} at once); best epoch {report['best_epoch']}")
    print(f"report: {report['out']} (epochs.json, scores.png, best_epoch.png); artifact: {report['out']}/model")
    return 0
