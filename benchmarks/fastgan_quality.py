"""FastGAN quality on synthetic CARS: a fixed number of CPU training steps against the untrained model.

    python benchmarks/fastgan_quality.py [--steps 100] [--size micro] [--resolution 256] [--width W]
                                         [--batch-size 4] [--eval-samples 64] [--cpus 2] [--out DIR]

Trains ``fastgan`` with the launcher (Ray Train, 1 CPU worker, CARS renders streamed by Ray Data,
seed 0) for exactly ``--steps`` steps, one report and checkpoint at the end, no periodic
validation. Then, in this process:

* D reconstruction loss: the L1 of the discriminator's three decoders (the training loss's
  ``recon`` term, no DiffAugment, batch statistics, each of the 4 quarters) on held-out CARS
  renders, for the untrained discriminator (the run's initial weights, same seed) and the trained
  one; plus the training log's mean ``d_recon`` over the first and last ``--track`` steps.
* Texture Fréchet distance (``microforge.evaluate``: ``texture_descriptor`` features, Gaussian
  statistics, ``frechet_distance``) of ``--eval-samples`` generated images (latents of seeds
  0..N-1, through the recorded transform's inverse to 16 bit, as ``microforge generate`` does)
  against as many held-out renders (seed ``--eval-seed``), for the untrained generator, the
  trained EMA generator (``generator_ema``) and the trained raw generator; the floor is a second
  set of held-out renders against the first (real vs real).

The workers import this file as ``fastgan_quality`` (Ray adds the script's directory to their path).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from microforge.trainers.fastgan.lightning import FastGANModule

TRACKED_MODULE = "fastgan_quality:TrackedFastGAN"


class TrackedFastGAN(FastGANModule):
    """FastGAN logging the mean ``d_recon`` of its first and of its last ``track_steps`` steps."""

    def __init__(self, track_steps: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.track_steps = track_steps
        self._recon: list[float] = []

    def log_dict(self, dictionary: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        if "d_recon" in dictionary:
            self._recon.append(float(dictionary["d_recon"]))
            k = self.track_steps
            dictionary = {**dictionary, "d_recon_first": statistics.fmean(self._recon[:k]),
                          "d_recon_last": statistics.fmean(self._recon[-k:])}
        super().log_dict(dictionary, *args, **kwargs)


def held_out(resolution: int, seed: int, count: int, start: int = 0) -> list[np.ndarray]:
    """``count`` uint16 CARS renders of the default preset, indices ``start..``, seed ``seed``."""
    from microforge.datasets.cars import load_preset, render_cars

    config = load_preset("default").model_copy(update={"size": resolution})
    return [render_cars(config, seed, i).image for i in range(start, start + count)]


def texture(images: list[np.ndarray]) -> np.ndarray:
    from microforge.evaluate.features import texture_descriptor

    return np.stack([texture_descriptor(np.asarray(image, np.float64) / 65535.0) for image in images])


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from microforge.evaluate.distances import frechet_distance, gaussian_stats

    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


@torch.no_grad()
def recon_loss(discriminator: torch.nn.Module, real: torch.Tensor, batch_size: int) -> float:
    """Mean over batches and the 4 quarters of the decoders' summed L1 (as the training loss)."""
    from microforge.trainers.fastgan.model import reconstruction_targets

    discriminator.train()  # batch statistics, as in training (the running ones of an untrained D are 0/1)
    losses = []
    for first in range(0, len(real) - batch_size + 1, batch_size):
        batch = real[first:first + batch_size]
        for part in range(4):
            _, recs, *_ = discriminator(batch, "real", part)
            losses.append(sum(F.l1_loss(r, t).item() for r, t in zip(recs, reconstruction_targets(batch, part))))
    return statistics.fmean(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps (one worker)")
    parser.add_argument("--size", default="micro", help="FastGAN size")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--width", type=int, default=None, help="ngf = ndf, overriding the size's")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--track", type=int, default=10, help="steps averaged for the first/last d_recon")
    parser.add_argument("--eval-samples", type=int, default=64, help="images per set for the Fréchet distances")
    parser.add_argument("--eval-seed", type=int, default=999, help="seed of the held-out renders")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    parser.add_argument("--out", default=None, help="keep the run here (default: a temporary directory)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from dataclasses import replace

    from microforge.platform.runtime import ray_runtime
    from microforge.trainers import Cadence, Scaling, get_workload, launch
    from microforge.trainers.predict import generate_images
    from microforge.trainers.lightning_import import pl
    from microforge.trainers.registry import load_artifact

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fastgan-quality-"))
    options = {"size": args.size, "resolution": args.resolution, "width": args.width, "val_samples": 0,
               "train_samples": args.steps * args.batch_size, "seed": 0}
    job = get_workload("fastgan").job(options, epochs=1, runs_dir=out / "runs", batch_size=args.batch_size,
                                      scaling=Scaling(num_workers=1), cadence=Cadence(every=args.steps, unit="steps"))
    job = replace(job, module=TRACKED_MODULE, module_config={**job.module_config, "track_steps": args.track})
    pl.seed_everything(job.seed, verbose=False)  # the worker seeds the same way: the run's initial weights
    untrained = job.build_module()
    with ray_runtime(num_cpus=args.cpus):
        started = time.perf_counter()
        result = launch(job)
        trained_s = time.perf_counter() - started
    loaded = load_artifact(result.artifact)
    transform = loaded.transform  # the recorded one (signed_unit): generation inverts it

    started = time.perf_counter()
    n = args.eval_samples
    real_a, real_b = held_out(args.resolution, args.eval_seed, n), held_out(args.resolution, args.eval_seed, n, n)
    features_a, features_b = texture(real_a), texture(real_b)
    seeds = list(range(n))
    generators = {"untrained generator": untrained.generator_ema.eval(),
                  "trained generator_ema": loaded["generator_ema"].eval(),
                  "trained generator (raw)": loaded["generator"].eval()}
    distances = {name: frechet(features_a, texture(generate_images(g, transform, seeds, dtype=np.uint16)))
                 for name, g in generators.items()}
    distances["real vs real (floor)"] = frechet(features_a, features_b)
    real = torch.from_numpy(np.stack([transform.apply(image)[None] for image in real_a]).astype(np.float32))
    recon = {"untrained": recon_loss(untrained.discriminator, real, args.batch_size),
             "trained": recon_loss(loaded["discriminator"], real, args.batch_size)}
    eval_s = time.perf_counter() - started

    metrics = result.last_metrics
    model = f"{args.size}{f' (width {args.width})' if args.width else ''}"
    print(f"\nFastGAN {model}, {args.resolution} px, batch {args.batch_size}, {args.steps} steps on 1 CPU worker "
          f"in {trained_s / 60:.1f} min (launch included); evaluation {eval_s:.0f} s; "
          f"load average now {os.getloadavg()[0]:.1f} (1 min)\n")
    header = f"{'D reconstruction loss (L1, 3 decoders)':<44}{'start':>10}{'end':>10}{'change':>9}"
    print(header)
    print("-" * len(header))
    first, last = metrics.get("d_recon_first_step", float("nan")), metrics.get("d_recon_last_step", float("nan"))
    print(f"{f'training log, mean of first/last {args.track} steps':<44}{first:>10.4f}{last:>10.4f}"
          f"{(last - first) / first:>+9.1%}")
    print(f"{f'held-out renders ({n}), untrained/trained D':<44}{recon['untrained']:>10.4f}{recon['trained']:>10.4f}"
          f"{(recon['trained'] - recon['untrained']) / recon['untrained']:>+9.1%}")
    print(f"\n{'texture Fréchet distance vs ' + str(n) + ' held-out renders':<44}{'FD':>10}{'/ floor':>10}")
    print("-" * len(header))
    floor = distances["real vs real (floor)"]
    for name, value in distances.items():
        print(f"{name:<44}{value:>10.3f}{value / floor:>10.1f}")
    print(f"\nrun: {result.run_dir}\nartifact: {result.artifact}")


if __name__ == "__main__":
    main()
