"""DDPM figures: training step time in a plain loop vs through Ray Train, and generation images/s
with 1 and 2 workers.

    python benchmarks/ddpm_step.py --data IMAGE_FOLDER [--resolution 32 --width 16 --levels 2
        --batch-size 8 --steps 40 --gen-n 16 --gen-steps 10]

The plain loop runs the module's own ``training_step`` + AdamW in this process on random
batches; the Ray Train figure is ``microforge train ddpm`` with 1 worker (wall time of the fit
over its steps, so it includes data feeding and the per-epoch overhead). Generation is
``generate_diffusion`` from the run's artifact with 1 and 2 workers (CPU).
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gen-n", type=int, default=16)
    parser.add_argument("--gen-steps", type=int, default=10)
    args = parser.parse_args()

    from microforge.generate.diffusion import generate_diffusion
    from microforge.platform.cli import main as cli
    from microforge.platform.runtime import ray_runtime

    figures = {"plain_loop_step_s": plain_loop(args)}
    with tempfile.TemporaryDirectory() as tmp, ray_runtime(num_cpus=2):
        runs = Path(tmp) / "runs"
        start = time.perf_counter()
        assert cli(["train", "ddpm", "--data", args.data, "--resolution", str(args.resolution), "--width",
                    str(args.width), "--levels", str(args.levels), "--layers-per-block", "1", "--steps",
                    str(args.steps), "--every", str(args.steps), "--workers", "1", "--batch-size",
                    str(args.batch_size), "--out", str(runs), "--name", "b"]) == 0
        figures["ray_train_s_per_step_incl_startup"] = (time.perf_counter() - start) / args.steps
        for workers in (1, 2):
            summary = generate_diffusion(runs / "b" / "model", args.gen_n, Path(tmp) / f"g{workers}", steps=args.gen_steps,
                                         scheduler="ddim", workers=workers, batch_size=max(1, args.gen_n // 4))
            figures[f"generate_images_per_s_{workers}w"] = summary.images_per_second
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
