"""Per-step cost of the Ray Train launcher against a plain PyTorch loop, same model and batches.

    python benchmarks/train_overhead.py [--steps 60] [--size 64] [--batch-size 8] [--preset tiny]
    python benchmarks/train_overhead.py --workload fastgan --steps 10 --warmup 2 --batch-size 4 \
        --setups 1:store [--preset micro] [--size 256] [--width W] [--repeats 2]

Workloads: ``delineation`` (the U-Net, default) and ``fastgan`` (``FastGANModule.training_step``:
G and D forward/backward with DiffAugment, the decoders' reconstruction loss, both Adam steps and
the EMA update; ``--preset`` is the FastGAN size, ``--size`` the resolution, ``--width`` the
ngf = ndf override for small CPU runs; training images are CARS renders).

Each launcher row is compared with a plain loop (delineation: the U-Net, DelineationLoss, AdamW +
warm-up/cosine and gradient clipping; fastgan: the module's own ``training_step`` with Lightning's
``optimizers``/``manual_backward``/``log_dict`` replaced by the bare optimizers, ``backward`` and
nothing; each in a bare PyTorch loop over batches already in memory, with as many torch threads
as a 1-CPU launcher worker) timed right before and right after that launch, so a busy machine
skews both sides alike; the load average is printed with the table. Besides the wall time per
step, the process CPU time per step (every thread of the training process) is reported: other
processes on a shared machine disturb it much less. ``--repeats`` repeats every row (medians of
the repeats are printed, with the min-max spread of the ratio).

Rows of the table (``--setups``: ``1:store``, ``1:stream``, ``2:store``, ``2:stream``):

* ``launcher, 1 worker, object store``: the same through ``launch()`` (Ray Train + Lightning + DDP
  strategy, batches read with ``get_dataset_shard`` from samples rendered once into the object
  store): the cost of the training machinery itself. Its ratio to the plain loop is the figure
  the issue asks for (target < 1.10).
* ``launcher, 1 worker, streamed``: the real pipeline, samples rendered by Ray Data while training.
* ``launcher, 2 workers, ...``: data-parallel throughput (samples/s over both workers).

Step times are the median interval between consecutive training steps after ``--warmup`` steps,
measured inside the training process, so Ray and worker start-up (reported separately as
``launch s``) do not count. Ray starts its workers at nice 15; this script starts them at
``--worker-niceness`` (default 0, the plain loop's), else a shared machine's load slows the
launcher rows alone. The workers must import this file as ``train_overhead``: Ray adds the
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

import numpy as np
import torch

from microforge.platform.imports import import_object
from microforge.trainers.fastgan.lightning import FastGANModule
from microforge.trainers.unet.lightning import UNetModule

BLOBS = "microforge.datasets.blobs:render_blob_batch"
CARS = "microforge.trainers.fastgan.data:render_cars_batch"


def _medians(stamps: list[tuple[float, float]], warmup: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) between consecutive (wall, cpu) stamps."""
    steps = list(zip(stamps, stamps[1:]))[warmup:]
    return (statistics.median(b[0] - a[0] for a, b in steps), statistics.median(b[1] - a[1] for a, b in steps))


class StepTimer:
    """Mixin of a LightningModule: logs the median interval between training steps as
    ``step_seconds`` and that of the process's CPU time as ``step_cpu_seconds``."""

    def __init__(self, warmup_steps: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warmup_steps = warmup_steps
        self._stamps: list[tuple[float, float]] = []

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._stamps = []

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # time finished steps, not queued kernels (as the plain loop)
        self._stamps.append((time.perf_counter(), time.process_time()))
        if len(self._stamps) > self.warmup_steps + 1:  # the last value logged is the median over the epoch
            wall, cpu = _medians(self._stamps, self.warmup_steps)
            self.log_dict({"step_seconds": wall, "step_cpu_seconds": cpu}, on_step=True, on_epoch=False)


class TimedUNetModule(StepTimer, UNetModule):
    """The U-Net module with the step timer."""


class TimedFastGANModule(StepTimer, FastGANModule):
    """The FastGAN module with the step timer."""


class BareFastGAN(FastGANModule):
    """``FastGANModule.training_step`` outside Lightning: bare optimizers, ``backward``, no logging."""

    def optimizers(self, use_pl_optimizer: bool = True) -> list[torch.optim.Optimizer]:
        return self.bare_optimizers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        loss.backward()

    def log_dict(self, *args: Any, **kwargs: Any) -> None:
        pass


TIMED_MODULES = {"delineation": "train_overhead:TimedUNetModule", "fastgan": "train_overhead:TimedFastGANModule"}


def renderer(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(import path, config) of the training images' renderer of the workload."""
    if args.workload == "delineation":
        return BLOBS, {"size": args.size}
    from microforge.datasets.cars import load_preset

    return CARS, load_preset("default").model_copy(update={"size": args.size}).to_json_dict()


@dataclass(frozen=True)
class Prerendered:
    """Training samples rendered once into the object store and read through ``get_dataset_shard``."""

    renderer: str
    config: dict[str, Any]
    samples: int
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def driver_datasets(self):
        from microforge.trainers.data import synthetic_dataset

        return {"train": synthetic_dataset(self.renderer, self.config, self.seed, self.samples).materialize()}

    def epoch_splits(self) -> tuple[str, ...]:
        return ()

    def epoch_dataset(self, split, ctx):
        raise KeyError(split)

    def rows_per_worker(self, split: str, world_size: int) -> int | None:
        return self.samples // world_size if split == "train" else None


_BATCHES: dict[str, list[dict[str, np.ndarray]]] = {}


def rendered_batches(args: argparse.Namespace) -> list[dict[str, np.ndarray]]:
    """The plain loop's batches (rendered once per process)."""
    path, config = renderer(args)
    if path not in _BATCHES:
        render = import_object(path, "renderer")
        _BATCHES[path] = [render(config, 0, range(b * args.batch_size, (b + 1) * args.batch_size))
                          for b in range(args.steps)]
    return _BATCHES[path]


def plain_fastgan(args: argparse.Namespace, threads: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds per ``FastGANModule.training_step`` in a bare loop (CPU, fp32)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batches = [{"image": torch.from_numpy(b["image"])} for b in rendered_batches(args)]
    module = BareFastGAN(size=args.preset, resolution=args.size, width=args.width, sample_images=0).train()
    module.bare_optimizers = module.configure_optimizers()
    stamps = []
    for index, batch in enumerate(batches):
        stamps.append((time.perf_counter(), time.process_time()))
        module.training_step(batch, index)
    stamps.append((time.perf_counter(), time.process_time()))
    return _medians(stamps, args.warmup)


def plain_loop(args: argparse.Namespace, threads: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds per step of a bare PyTorch loop (bf16 autocast on a GPU, like the launcher)."""
    if args.workload == "fastgan":
        return plain_fastgan(args, threads)
    from microforge.trainers.losses import DelineationLoss
    from microforge.trainers.schedules import warmup_cosine_lambda
    from microforge.trainers.unet import unet_from_preset

    device = torch.device("cuda" if args.gpu else "cpu")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batches = [(torch.from_numpy(b["image"]).to(device), torch.from_numpy(b["mask"]).to(device))
               for b in rendered_batches(args)]
    model = unet_from_preset(args.preset).to(device).train()
    loss_fn = DelineationLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_lambda(1, args.steps))
    stamps = []
    for image, mask in batches:
        if args.gpu:
            torch.cuda.synchronize()
        stamps.append((time.perf_counter(), time.process_time()))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.gpu):
            loss, _ = loss_fn(model(image), mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    if args.gpu:
        torch.cuda.synchronize()
    stamps.append((time.perf_counter(), time.process_time()))
    return _medians(stamps, args.warmup)


def launcher_run(args: argparse.Namespace, workers: int, streamed: bool, runs_dir: str) -> tuple[float, ...]:
    """(median wall s/step, median CPU s/step, launch wall seconds, worker CPUs) of one launcher epoch."""
    from dataclasses import replace

    import ray

    from microforge.trainers import Cadence, Scaling, get_workload, launch, plan_worker_cpus

    samples = args.steps * args.batch_size * workers
    scaling = Scaling.from_gpus(workers, 1.0 if args.gpu else 0.0)
    if args.workload == "fastgan":
        options = {"size": args.preset, "resolution": args.size, "width": args.width, "train_samples": samples,
                   "val_samples": 0, "sample_images": 0}
        extra = {"cadence": Cadence(every=args.steps, unit="steps")}  # one report and checkpoint, at the end
    else:
        options = {"preset": args.preset, "image_size": args.size, "train_samples": samples, "val_samples": 0}
        extra = {}
    job = get_workload(args.workload).job(options, epochs=1, runs_dir=runs_dir, batch_size=args.batch_size,
                                          scaling=scaling, **extra)
    job = replace(job, module=TIMED_MODULES[args.workload],
                  module_config={**job.module_config, "warmup_steps": args.warmup})
    if not streamed:
        job = replace(job, data=Prerendered(*renderer(args), samples))
    started = time.perf_counter()
    result = launch(job)
    cpus = plan_worker_cpus(Scaling(num_workers=workers), ray.cluster_resources()["CPU"])
    metrics = result.last_metrics
    return metrics["step_seconds"], metrics["step_cpu_seconds"], time.perf_counter() - started, cpus


SETUPS = {"1:store": (1, False), "1:stream": (1, True), "2:store": (2, False), "2:stream": (2, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=sorted(TIMED_MODULES), default="delineation")
    parser.add_argument("--steps", type=int, default=60, help="training steps per worker")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the median")
    parser.add_argument("--size", type=int, default=None, help="image side (default 64; fastgan: 256)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--preset", default=None, help="U-Net preset (default tiny) or FastGAN size (micro)")
    parser.add_argument("--width", type=int, default=None, help="fastgan: ngf = ndf, overriding the size's")
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=None,
                        help="launcher rows (default: all on CPUs, the 1-worker ones with --gpu)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every row (medians are printed)")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="nice value of Ray's workers (Ray's own default is 15: on a busy machine they would "
                             "lose the CPU to everything else while the plain loop runs at 0)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (1-worker rows only), bf16-mixed")
    args = parser.parse_args()
    fastgan = args.workload == "fastgan"
    args.size = args.size or (256 if fastgan else 64)
    args.preset = args.preset or ("micro" if fastgan else "tiny")
    if fastgan and args.gpu:
        parser.error("--gpu: the plain FastGAN loop is CPU/fp32 only")
    setups = args.setups or (["1:store", "1:stream"] if args.gpu else list(SETUPS))

    import ray

    from microforge.platform.runtime import ray_runtime
    from microforge.trainers import Scaling, plan_worker_cpus

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # read by the raylet ray.init starts
    rows = []
    with ray_runtime(num_cpus=args.cpus), tempfile.TemporaryDirectory() as runs_dir:
        cluster_cpus = ray.cluster_resources()["CPU"]
        threads = max(1, int(plan_worker_cpus(Scaling(num_workers=1), cluster_cpus)))
        for setup in setups:
            workers, streamed = SETUPS[setup]
            runs = []
            for repeat in range(args.repeats):
                # The plain loop runs right before and after each launch, so each ratio compares
                # measurements taken under the same machine load.
                before = plain_loop(args, threads)
                step, cpu, wall, cpus = launcher_run(args, workers, streamed, runs_dir)
                after = plain_loop(args, threads)
                plain, plain_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
                runs.append((step, plain, cpu, plain_cpu, wall, os.getloadavg()[0]))
                print(f"[{setup} run {repeat + 1}] s/step {step:.4f} (plain {before[0]:.4f} / {after[0]:.4f}), "
                      f"CPU s/step {cpu:.4f} (plain {before[1]:.4f} / {after[1]:.4f}), load {runs[-1][-1]:.1f}",
                      flush=True)
            name = f"launcher, {workers} worker{'s' * (workers > 1)}, {'streamed' if streamed else 'object store'}"
            rows.append((name, workers, cpus, runs))

    model = (f"{args.preset} FastGAN{f' (width {args.width})' if args.width else ''}" if fastgan
             else f"{args.preset} U-Net")
    print(f"\n{model}, {args.size} px, batch {args.batch_size} per worker, {args.steps} steps "
          f"({args.warmup} warm-up), Ray with {cluster_cpus:g} CPUs{', 1 GPU per worker, bf16-mixed' if args.gpu else ''}; "
          f"plain loop with {threads} torch thread(s); Ray workers at nice {args.worker_niceness}, this process at "
          f"{os.nice(0)}; {args.repeats} run(s) per row; load average now "
          f"{os.getloadavg()[0]:.1f} (1 min)")
    header = (f"{'setup':<36}{'CPU/worker':>11}{'s/step':>9}{'plain s/step':>14}{'ratio':>8}{'ratio range':>14}"
              f"{'CPU s/step':>12}{'plain CPU':>11}{'CPU ratio':>10}{'samples/s':>11}{'plain samples/s':>17}"
              f"{'launch s':>10}")
    print(header)
    print("-" * len(header))
    for name, workers, cpus, runs in rows:
        step, plain, cpu, plain_cpu, wall, _ = (statistics.median(column) for column in zip(*runs))
        ratios = [r[0] / r[1] for r in runs]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(f"{name:<36}{cpus:>11.2f}{step:>9.4f}{plain:>14.4f}{statistics.median(ratios):>8.3f}{spread:>14}"
              f"{cpu:>12.4f}{plain_cpu:>11.4f}{statistics.median(r[2] / r[3] for r in runs):>10.3f}"
              f"{workers * args.batch_size / step:>11.2f}{args.batch_size / plain:>17.2f}{wall:>10.1f}")


if __name__ == "__main__":
    main()
