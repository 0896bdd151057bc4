"""``microforge generate`` throughput: images/s with 1 and 2 workers for a small generator.

    python benchmarks/generate_images.py [--n 512] [--size 64] [--batch-size 16] [--workers 1 2] [--bits 8]
    python benchmarks/generate_images.py --gpus-per-worker 1 --workers 1 --n 20000 --batch-size 256
    python benchmarks/generate_images.py --model runs/fastgan-.../model --n 128 --batch-size 8

Saves a randomly initialised DCGAN-style generator (latent 64 -> transposed convolutions ->
``size`` x ``size``, one channel, ``tanh``) as a ``generate`` artifact, then runs the whole job
(``generate_dataset``: Ray Data, one generator actor per worker, PNG encoding, meta files,
manifest) into a fresh directory per worker count, on one local Ray with as many CPUs as the
largest worker count. The time includes starting the actors and writing the manifest; each
actor runs torch on one thread (Ray sets ``OMP_NUM_THREADS`` to its one CPU). The first and
second directories are compared byte for byte (they must be identical). The artifact names its
class as ``generate_images:SmallGenerator``: Ray adds the script's directory to the workers'
``sys.path``.

``--model ARTIFACT`` times a trained generator artifact instead (e.g. a FastGAN run's ``model``
directory, whose default component is ``generator_ema``); ``--size`` is then ignored.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from microforge.generate import generate_dataset
from microforge.platform.artifact import ComponentWeights, save_artifact
from microforge.platform.runtime import ray_runtime


class SmallGenerator(nn.Module):
    """latent (B, latent_dim) -> (B, 1, size, size) in [-1, 1]: a 4x4 seed upsampled by 2 until ``size``."""

    def __init__(self, latent_dim: int = 64, size: int = 64, width: int = 64) -> None:
        super().__init__()
        self.config = {"latent_dim": latent_dim, "size": size, "width": width}
        self.latent_shape = (latent_dim,)
        self.project = nn.Linear(latent_dim, width * 16)
        layers: list[nn.Module] = []
        side, channels = 4, width
        while side < size:
            out = max(channels // 2, 8)
            layers += [nn.ConvTranspose2d(channels, out, 4, 2, 1), nn.BatchNorm2d(out), nn.ReLU()]
            side, channels = side * 2, out
        self.body = nn.Sequential(*layers, nn.Conv2d(channels, 1, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.config["width"], 4, 4)
        return self.body(x)


def save_small_generator(directory: Path, size: int) -> None:
    torch.manual_seed(0)
    model = SmallGenerator(size=size).eval()
    save_artifact(directory, {"generator": ComponentWeights("generate_images:SmallGenerator",
                                                            model.config, model.state_dict())},
                  workload=None, task="generate", transform={"name": "signed_unit", "params": {}},
                  preprocessing={}, metrics={}, provenance={"benchmark": "generate_images"})


def _model_generator(artifact: Path) -> tuple[str, nn.Module]:
    """(component name, module) of the component ``microforge generate`` uses by default."""
    from microforge.generate.job import choose_component
    from microforge.trainers.registry import load_artifact

    loaded = load_artifact(artifact)
    name = choose_component(list(loaded.components), None)
    return name, loaded[name].eval()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="images per run")
    parser.add_argument("--size", type=int, default=64, help="image side (a power of 2, >= 8)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bits", type=int, choices=(8, 16), default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--model", default=None, help="a generator artifact to time instead of the small one")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    with tempfile.TemporaryDirectory() as tmp, ray_runtime(num_cpus=max(args.workers)):
        root = Path(tmp)
        if args.model:
            artifact, name, generator = Path(args.model), *_model_generator(Path(args.model))
            with torch.no_grad():
                side = generator(torch.zeros(1, *generator.latent_shape)).shape[-1]
        else:
            artifact, name, side = root / "artifact", "SmallGenerator", args.size
            save_small_generator(artifact, args.size)
            generator = SmallGenerator(size=args.size)
        params = sum(p.numel() for p in generator.parameters())
        print(f"generator: {name}, {params:,} parameters, {side}x{side} px, {args.bits}-bit PNG, "
              f"batch {args.batch_size}, {args.n} images per run; load average {os.getloadavg()[0]:.1f} (1 min)\n")
        print(f"{'workers':>7} {'seconds':>8} {'images/s':>9} {'speed-up':>8}")
        first = None
        for workers in args.workers:
            out = root / f"out-{workers}"
            summary = generate_dataset(artifact, args.n, out, workers=workers, bits=args.bits,
                                       batch_size=args.batch_size, gpus_per_worker=args.gpus_per_worker)
            rate = summary.images_per_second
            first = first or rate
            print(f"{workers:>7} {summary.seconds:>8.2f} {rate:>9.1f} {rate / first:>7.2f}x")
        if len(args.workers) > 1:
            same = _files(root / f"out-{args.workers[0]}") == _files(root / f"out-{args.workers[1]}")
            print(f"\nload average {os.getloadavg()[0]:.1f} (1 min); byte-identical with {args.workers[0]} and {args.workers[1]} workers: {same}")


if __name__ == "__main__":
    main()
