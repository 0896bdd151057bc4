"""``microforge eval delineation`` (alias ``unet``): Dice/IoU/HD95/boundary F1 per SNR bin on fresh blobs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register_eval(parser: argparse.ArgumentParser) -> None:
    parser.description = "Dice/IoU/HD95/boundary F1 per SNR bin on fresh blobs, a JSON report and pictures"
    parser.add_argument("--model", required=True, help="model artifact directory")
    parser.add_argument("--samples", type=int, default=200, help="blobs to render (default 200)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: the training size)")
    parser.add_argument("--seed", type=int, default=None, help="blob seed (default 12345)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-scale", type=float, default=None,
                        help="resize factor of the images before the network (default: the model's training scale)")
    parser.add_argument("--out", default=None, help="report directory (default: <artifact>/../eval)")
    parser.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import EVAL_SEED, evaluate_unet, write_report

    result = evaluate_unet(args.model, samples=args.samples, size=args.size,
                           seed=EVAL_SEED if args.seed is None else args.seed,
                           batch_size=args.batch_size, address=args.address, input_scale=args.input_scale)
    out = Path(args.out) if args.out else Path(args.model).absolute().parent / "eval"
    paths = write_report(result, out)
    report = result.report
    print(f"model: {report['model']}  ({report['samples']} blobs, {report['size']} px, seed {report['seed']})")
    header = f"{'SNR bin (dB)':<14}{'n':>6}{'Dice':>8}{'IoU':>8}{'HD95':>8}{'BF1':>8}{'clean':>8}"
    print(header)
    print("-" * len(header))

    def fmt(value: float | None, spec: str = ".3f") -> str:
        return f"{value:{spec}}" if value is not None else "-"

    for row in [*report["snr_bins"], {"bin": "all", "n": report["samples"], **report["overall"]}]:
        print(f"{row['bin']:<14}{row['n']:>6}{fmt(row['dice']):>8}{fmt(row['iou']):>8}"
              f"{fmt(row['hd95'], '.2f'):>8}{fmt(row['boundary_f1']):>8}{fmt(row['clean_dice']):>8}")
    for key in ("report", "plot", "overlays"):
        print(f"{key}: {paths[key]}")
    return 0
