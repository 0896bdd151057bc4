"""DDPM figures: training step time in a plain loop vs through Ray Train, and generation images/s
with 1 and 2 workers.

    python benchmarks/ddpm_step.py --data IMAGE_FOLDER [--resolution 32 --width 16 --levels 2
        --batch-size 8 --steps 40 --gen-n 64 --gen-batch 4 --gen-steps 10]

The plain loop runs the module's own loss + AdamW in this process on random batches (median
step); the Ray Train figure is ``microforge train ddpm`` with 1 worker, run for --steps and for
twice as many: the difference per step is the steady step time with data feeding and the
per-epoch work, without what a run costs once (workers, validation, the artifact). Generation is
``generate_diffusion`` from the run's artifact with 1 and 2 workers (CPU) after a warm-up job: the
whole job's images/s, and the steady images/s between the first and the last image committed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def plain_loop(args: argparse.Namespace) -> float:
    import torch

    from microforge.trainers.diffusion.lightning import DDPMModule

    module = DDPMModule(resolution=args.resolution, width=args.width, levels=args.levels, layers_per_block=1)
    optimizer = torch.optim.AdamW(module.unet.parameters(), lr=1e-4)
    batch = module.example_batch(args.batch_size)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = _loss(module, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _loss(module, batch):
    # training_step outside a Trainer cannot self.log; the same computation without logging.
    import torch
    import torch.nn.functional as F

    from microforge.trainers.diffusion.lightning import to_model_images

    x0 = to_model_images(batch["image"], module.hparams.resolution)
    noise = torch.randn_like(x0)
    t = torch.randint(0, module.hparams.num_train_timesteps, (x0.shape[0],))
    pred = module.unet(module.noise.add_noise(x0, noise, t), t, class_labels=batch["phase_index"]).sample
    return F.mse_loss(pred, noise)


def train_seconds(args: argparse.Namespace, runs: Path, name: str, steps: int) -> float:
    """Wall time of ``microforge train ddpm`` for ``steps`` steps on 1 worker (in the open Ray)."""
    from microforge.platform.cli import main as cli

    start = time.perf_counter()
    assert cli(["train", "ddpm", "--data", args.data, "--resolution", str(args.resolution), "--width",
                str(args.width), "--levels", str(args.levels), "--layers-per-block", "1", "--steps",
                str(steps), "--every", str(steps), "--workers", "1", "--batch-size",
                str(args.batch_size), "--out", str(runs), "--name", name]) == 0
    return time.perf_counter() - start


def generate_rates(model: Path, out: Path, n: int, workers: int, args: argparse.Namespace) -> tuple[float, float]:
    """(whole-job images/s, steady images/s) of one ``generate_diffusion`` job. Steady: the images
    committed after each worker's first chunk over the time from the first commit to the last
    (file modification times), so the job's start (actors loading the model) and its end (the
    manifest) do not count."""
    from microforge.generate.diffusion import generate_diffusion

    start = time.perf_counter()
    generate_diffusion(model, n, out, steps=args.gen_steps, scheduler="ddim", workers=workers,
                       batch_size=args.gen_batch)
    seconds = time.perf_counter() - start
    stamps = sorted(p.stat().st_mtime for p in (out / "images").glob("*.png"))
    return n / seconds, (n - workers * args.gen_batch) / (stamps[-1] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gen-n", type=int, default=64, help="images per generation job")
    parser.add_argument("--gen-batch", type=int, default=4, help="images sampled together (a chunk)")
    parser.add_argument("--gen-steps", type=int, default=10)
    args = parser.parse_args()

    from microforge.platform.runtime import ray_runtime

    plain = plain_loop(args)
    with tempfile.TemporaryDirectory() as tmp, ray_runtime(num_cpus=2):
        runs = Path(tmp) / "runs"
        # Steady figures: each job runs at two sizes, and the difference removes what a job
        # costs whatever its size (Ray Train's workers, validation, actors loading the model).
        short = train_seconds(args, runs, "short", args.steps)
        long = train_seconds(args, runs, "long", 2 * args.steps)
        model = runs / "long" / "model"
        generate_rates(model, Path(tmp) / "warm-up", args.gen_batch * 2, 2, args)
        gen = {workers: generate_rates(model, Path(tmp) / f"g{workers}", args.gen_n, workers, args)
               for workers in (1, 2)}
    ray_step = (long - short) / args.steps
    print(f"\nDDPM {args.resolution} px, width {args.width}, {args.levels} levels, batch {args.batch_size} (CPU)")
    print(f"{'training':<34}{'s/step':>8}")
    print(f"{'plain loop (median step)':<34}{plain:>8.3f}")
    print(f"{'Ray Train, 1 worker (steady)':<34}{ray_step:>8.3f}   ({ray_step / plain:.2f}x the plain loop; "
          f"a {args.steps}-step run {short:.1f} s, {2 * args.steps} steps {long:.1f} s)")
    print(f"\ngeneration, {args.gen_steps} DDIM steps, chunks of {args.gen_batch}")
    print(f"{'workers':>7} {'job images/s':>13} {'steady images/s':>16} {'speed-up':>8}")
    for workers, (whole, steady) in gen.items():
        print(f"{workers:>7} {whole:>13.2f} {steady:>16.2f} {steady / gen[1][1]:>7.2f}x")
    print(f"{args.gen_n} images per job; steady: between the first and the last image committed (without the "
          "actors' start-up and the manifest); goal >= 1.8x with 2 workers")


if __name__ == "__main__":
    main()
