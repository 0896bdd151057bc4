"""Per-step cost of the Ray Train launcher against a plain PyTorch loop, same model and batches.

    python benchmarks/train_overhead.py [--steps 60] [--size 64] [--batch-size 8] [--preset tiny]

Rows of the table:

Each launcher row is compared with a plain loop (the U-Net, DelineationLoss, AdamW +
warm-up/cosine and gradient clipping in a bare PyTorch loop over batches already in memory, with
as many torch threads as a 1-CPU launcher worker) timed right before and right after that launch,
so a busy machine skews both sides alike; the load average is printed with the table.

* ``launcher, 1 worker, object store``: the same through ``launch()`` (Ray Train + Lightning + DDP
  strategy, batches read with ``get_dataset_shard`` from blobs rendered once into the object
  store): the cost of the training machinery itself. Its ratio to the plain loop is the figure
  the issue asks for (target < 1.10).
* ``launcher, 1 worker, streamed``: the real pipeline, blobs rendered by Ray Data while training.
* ``launcher, 2 workers, ...``: data-parallel throughput (samples/s over both workers).

Step times are the median interval between consecutive training steps after ``--warmup`` steps,
measured inside the training process, so Ray and worker start-up (reported separately as
``launch s``) do not count. The workers must import this file as ``train_overhead``: Ray adds the
script's directory to their ``sys.path``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from microforge.trainers.unet.lightning import UNetModule

TIMED_MODULE = "train_overhead:TimedUNetModule"


class TimedUNetModule(UNetModule):
    """The U-Net module, logging the median interval between training steps as ``step_seconds``."""

    def __init__(self, warmup_steps: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warmup_steps = warmup_steps
        self._stamps: list[float] = []

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._stamps = []

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # time finished steps, not queued kernels (as the plain loop)
        self._stamps.append(time.perf_counter())
        steps = [b - a for a, b in zip(self._stamps, self._stamps[1:])][self.warmup_steps:]
        if steps:  # a step-level value: the last one logged is the median over the epoch
            self.log("step_seconds", statistics.median(steps), on_step=True, on_epoch=False)


@dataclass(frozen=True)
class PrerenderedBlobs:
    """Training blobs rendered once into the object store and read through ``get_dataset_shard``."""

    size: int
    samples: int
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def driver_datasets(self):
        from microforge.trainers.data import synthetic_dataset

        return {"train": synthetic_dataset("microforge.datasets.blobs:render_blob_batch", {"size": self.size},
                                           self.seed, self.samples).materialize()}

    def epoch_splits(self) -> tuple[str, ...]:
        return ()

    def epoch_dataset(self, split, ctx):
        raise KeyError(split)

    def rows_per_worker(self, split: str, world_size: int) -> int | None:
        return self.samples // world_size if split == "train" else None


def plain_loop(args: argparse.Namespace, threads: int) -> float:
    """Median seconds per step of a bare PyTorch loop (bf16 autocast on a GPU, like the launcher)."""
    from microforge.datasets.blobs import render_blob_batch
    from microforge.trainers.losses import DelineationLoss
    from microforge.trainers.schedules import warmup_cosine_lambda
    from microforge.trainers.unet import unet_from_preset

    device = torch.device("cuda" if args.gpu else "cpu")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batches = []
    for b in range(args.steps):
        arrays = render_blob_batch({"size": args.size}, 0, range(b * args.batch_size, (b + 1) * args.batch_size))
        batches.append((torch.from_numpy(arrays["image"]).to(device), torch.from_numpy(arrays["mask"]).to(device)))
    model = unet_from_preset(args.preset).to(device).train()
    loss_fn = DelineationLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_lambda(1, args.steps))
    stamps = []
    for image, mask in batches:
        if args.gpu:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.gpu):
            loss, _ = loss_fn(model(image), mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    if args.gpu:
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())
    return statistics.median([b - a for a, b in zip(stamps, stamps[1:])][args.warmup:])


def launcher_run(args: argparse.Namespace, workers: int, streamed: bool, runs_dir: str) -> tuple[float, float, float]:
    """(median seconds per step, launch wall seconds, worker CPUs) of one launcher epoch."""
    from dataclasses import replace

    import ray

    from microforge.trainers import Scaling, get_workload, launch, plan_worker_cpus

    samples = args.steps * args.batch_size * workers
    job = get_workload("delineation").job(
        {"preset": args.preset, "image_size": args.size, "train_samples": samples, "val_samples": 0}, epochs=1,
        runs_dir=runs_dir, batch_size=args.batch_size, scaling=Scaling.from_gpus(workers, 1.0 if args.gpu else 0.0))
    job = replace(job, module=TIMED_MODULE, module_config={**job.module_config, "warmup_steps": args.warmup})
    if not streamed:
        job = replace(job, data=PrerenderedBlobs(args.size, samples))
    started = time.perf_counter()
    result = launch(job)
    cpus = plan_worker_cpus(Scaling(num_workers=workers), ray.cluster_resources()["CPU"])
    return result.last_metrics["step_seconds"], time.perf_counter() - started, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per worker")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the median")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (1-worker rows only), bf16-mixed")
    args = parser.parse_args()

    import ray

    from microforge.platform.runtime import ray_runtime
    from microforge.trainers import Scaling, plan_worker_cpus

    rows = []
    with ray_runtime(num_cpus=args.cpus), tempfile.TemporaryDirectory() as runs_dir:
        cluster_cpus = ray.cluster_resources()["CPU"]
        threads = max(1, int(plan_worker_cpus(Scaling(num_workers=1), cluster_cpus)))
        setups = ((1, False), (1, True)) if args.gpu else ((1, False), (1, True), (2, False), (2, True))
        for workers, streamed in setups:
            # The plain loop runs right before and after each launch, so each ratio compares
            # measurements taken under the same machine load.
            before = plain_loop(args, threads)
            step, wall, cpus = launcher_run(args, workers, streamed, runs_dir)
            plain = (before + plain_loop(args, threads)) / 2
            source = "streamed" if streamed else "object store"
            name = f"launcher, {workers} worker{'s' * (workers > 1)}, {source}"
            rows.append((name, workers, cpus, step, plain, wall))

    print(f"\n{args.preset} U-Net, {args.size} px, batch {args.batch_size} per worker, {args.steps} steps, "
          f"Ray with {cluster_cpus:g} CPUs{', 1 GPU per worker, bf16-mixed' if args.gpu else ''}; "
          f"plain loop with {threads} torch thread(s); load average now {os.getloadavg()[0]:.1f}")
    header = (f"{'setup':<36}{'CPU/worker':>11}{'s/step':>9}{'plain s/step':>14}{'ratio':>8}"
              f"{'samples/s':>11}{'plain samples/s':>17}{'launch s':>10}")
    print(header)
    print("-" * len(header))
    for name, workers, cpus, step, plain, wall in rows:
        print(f"{name:<36}{cpus:>11.2f}{step:>9.4f}{plain:>14.4f}{step / plain:>8.3f}"
              f"{workers * args.batch_size / step:>11.1f}{args.batch_size / plain:>17.1f}{wall:>10.1f}")


if __name__ == "__main__":
    main()
