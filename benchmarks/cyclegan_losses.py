"""The colorization losses on and off: per-epoch scores of two CycleGAN runs on rendered data.

    python benchmarks/cyclegan_losses.py [--epochs 6] [--size 64] [--width 16] [--train 32] [--test 16]

Renders a two-domain folder (``synth unaligned``), trains two runs on it with identical seeds,
one with the default weights (gt=5, colorvar=5, hsv=10) and one with all three at 0 (the
reference CycleGAN), scores every epoch of both with ``eval cyclegan`` and prints the per-epoch
GT Dice, structure SSIM, HSV correlation and texture FD side by side. CPU, 1 worker per run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from microforge.datasets.unaligned.dataset import generate_dataset
from microforge.evaluate.cyclegan import SCORES, evaluate_run
from microforge.platform.runtime import ray_runtime
from microforge.trainers.job import Scaling
from microforge.trainers.launcher import launch
from microforge.trainers.workload import get_workload

SETTINGS = {"on": "gt=5,colorvar=5,hsv=10", "off": "gt=0,colorvar=0,hsv=0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=64, choices=(64, 128, 256))
    parser.add_argument("--width", type=int, default=16, help="ngf = ndf")
    parser.add_argument("--blocks", type=int, default=None, help="residual blocks (default: the reference's)")
    parser.add_argument("--train", type=int, default=32, help="training samples rendered")
    parser.add_argument("--test", type=int, default=16, help="test samples rendered")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temp directory)")
    args = parser.parse_args()
    workload = get_workload("cyclegan")
    with tempfile.TemporaryDirectory() as tmp, ray_runtime():
        root = Path(args.out or tmp)
        data = root / "data"
        n = args.train + args.test
        generate_dataset(None, n, data, size=args.size, split=(args.train / n, 0.0, args.test / n))
        scores = {}
        for name, weights in SETTINGS.items():
            options = {"data": str(data), "size": args.size, "width": args.width, "n_blocks": args.blocks,
                       "invert_a": True, "loss_weights": weights, "val_samples": args.test}
            job = workload.job(options, epochs=args.epochs, runs_dir=root / "runs", name=f"losses-{name}",
                               scaling=Scaling(1), batch_size=args.batch_size)
            result = launch(job)
            scores[name] = {r["epoch"]: r for r in evaluate_run(result.run_dir, select="rank")["epochs"]}
            (root / f"scores-{name}.json").write_text(json.dumps(scores[name], indent=2))
    header = " ".join(f"{f'{s} {k}':>11}" for s in SCORES for k in SETTINGS)
    print(f"\n{args.epochs} epochs, {args.size} px, ngf = ndf = {args.width}, {args.train} train / {args.test} test "
          "samples; extra losses on (gt=5, colorvar=5, hsv=10) vs off")
    print(f"{'epoch':>5} {header}")
    for epoch in sorted(scores["on"]):
        print(f"{epoch:>5} " + " ".join(f"{scores[k][epoch][s]:11.4f}" for s in SCORES for k in SETTINGS))


if __name__ == "__main__":
    main()
