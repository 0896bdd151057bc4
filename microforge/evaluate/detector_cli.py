"""``microforge eval crystals --model M --data DIR``: rotated-IoU AP, count and size errors, pictures."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    """Set up ``eval crystals`` (the workload's ``evaluate`` hook; the group adds ``--address``)."""
    parser.description = ("Detect the rods of a labelled crystal dataset with a detector artifact and score them: "
                          "rotated-IoU AP@0.5 and AP@0.5:0.95, count error per image, length and width error of "
                          "matched rods; report.json, per_image.csv, pr_curve.png, overlays.png")
    parser.add_argument("--model", required=True, help="detector artifact directory")
    parser.add_argument("--data", required=True, help="dataset directory with DOTA or Ultralytics OBB labels")
    parser.add_argument("--split", default=None, help="manifest split (default: test, else val, else train)")
    parser.add_argument("--max-images", type=int, default=None, help="score at most N images")
    parser.add_argument("--count-score", type=float, default=None,
                        help="detections scoring at least this count as rods (default: the score the "
                             "artifact chose on its validation set, else 0.3)")
    parser.add_argument("--tile", type=int, default=1024, help="largest side run in one pass; larger images "
                                                               "are tiled (default 1024)")
    parser.add_argument("--overlap", type=int, default=384, help="overlap of neighbouring tiles in px (default 384)")
    parser.add_argument("--out", default=None, help="report directory (default: <artifact>/../eval-crystals)")
    parser.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from microforge.platform.errors import ConfigError
    from microforge.trainers.detector.predict import TilingSettings

    from .detector import evaluate_detector, write_report

    if args.max_images is not None and args.max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {args.max_images}")
    count_score = args.count_score  # None: the one the artifact records
    if count_score is not None and not 0.0 <= count_score <= 1.0:
        raise ConfigError(f"--count-score must lie in [0, 1], got {count_score}")
    TilingSettings(args.tile, args.overlap)  # checked before any work
    result = evaluate_detector(args.model, args.data, split=args.split, max_images=args.max_images,
                               count_score=count_score, tile=args.tile, overlap=args.overlap, address=args.address)
    out = Path(args.out) if args.out else Path(args.model).absolute().parent / "eval-crystals"
    paths = write_report(result, out)
    r = result.report

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    print(f"model: {r['model']}  ({r['images']} images, {r['rods']} rods, split {r['split']})")
    print(f"AP50 {fmt(r['ap50'])}  AP50:95 {fmt(r['ap50_95'])}  count error {fmt(r['count_error'])}  "
          f"length error {fmt(r['length_error'])}  width error {fmt(r['width_error'])}  (medians)")
    for key in ("report", "table", "pr_curve", "overlays"):
        print(f"{key}: {paths[key]}")
    return 0
