"""Does on-the-fly synthesis keep the training step fed? Three rates side by side, for any workload
whose training data is a :class:`~microforge.trainers.data.SyntheticData`:

* ``pipeline alone``: samples/s the feed delivers to a training loop whose step does nothing
  (on a GPU: batches already copied to the device);
* ``step alone``: samples/s of the workload's training step (its LightningModule under the same
  Lightning ``Trainer`` settings as a run) on batches already in memory on the device;
* ``together``: the same step reading the feed;

and the **feed ratio** ``together / step alone`` (the GPU target is >= 0.9) and ``together / min(pipeline,
step)`` (overlap: 1.0 when the slower side alone sets the pace; the CPU target is >= 0.9), and
the median wait of the training loop at an epoch boundary (the start of an epoch to its first
batch: a new epoch's dataset starting up shows here).

    python benchmarks/feed_rate.py                                   # delineation, tiny U-Net, 64 px, CPU
    python benchmarks/feed_rate.py --option image_size=128 --data-workers 1 2 --repeats 3
    python benchmarks/feed_rate.py --gpu --option preset=small --option image_size=256 \\
        --precision bf16-mixed --batch-size 16 --data-workers 4 8 15      # the issue's H100 target
    python benchmarks/feed_rate.py --workload fastgan --option width=8 --option resolution=256

Feeds (``--feeds``): ``prefetch`` is the launcher's :class:`~microforge.trainers.feed.EpochFeed`
(next epoch started while this one trains, blocks rendered by plain Ray tasks, pinned batches
copied to the device ahead of use); ``per-epoch`` is the loader before it (a new Ray Data dataset
opened when each epoch begins, ``iter_torch_batches(prefetch_batches=2)``). Every rate spans ``--epochs`` epochs of ``--steps``
steps, so epoch boundaries count; the first ``--warmup`` steps are left out. The training step
runs in this process with ``--threads`` torch threads; rendering runs in Ray tasks, at
most ``--data-workers`` at a time, in an embedded Ray of ``--cpus`` CPUs. The render cost of one
data worker is measured in-process and the ``--data-workers`` that would keep up with the step
(``ceil(1.25 x render / step)``) is printed. Rates are medians over ``--repeats``; on a shared
machine, compare rows of one invocation only (the load average is printed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import replace
from typing import Any

import torch

from microforge.platform.imports import import_object
from microforge.trainers import EpochBatches, EpochContext, SyntheticData, get_workload
from microforge.trainers.feed import EpochFeed, recommended_data_workers
from microforge.trainers.trainer_factory import build_trainer


class PerEpochFeed:
    """The loader before the feed: each epoch's dataset opened when the epoch begins."""

    def __init__(self, open_dataset, batch_size: int, device: torch.device | None) -> None:
        self.open_dataset, self.batch_size, self.device = open_dataset, batch_size, device

    def epoch(self, epoch: int):
        return self.open_dataset(epoch).to_dataset().iter_torch_batches(batch_size=self.batch_size, prefetch_batches=2,
                                                           device=self.device or "cpu")

    def close(self) -> None:
        pass


def make_feed(kind: str, data: SyntheticData, epochs: int, batch_size: int, data_workers: int,
              device: torch.device | None):
    def open_dataset(epoch: int):
        return data.epoch_dataset("train", EpochContext(epoch, epochs, data_workers=data_workers))

    if kind == "prefetch":
        return EpochFeed(open_dataset, epochs, batch_size, device=device)
    return PerEpochFeed(open_dataset, batch_size, device)


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def pipeline_alone(feed, epochs: int, warmup: int, batch_size: int, cuda: bool) -> float:
    """Samples/s the feed delivers to a no-op step."""
    seen, started = 0, None
    for epoch in range(epochs):
        for _ in feed.epoch(epoch):
            seen += 1
            if seen == warmup + 1:
                sync(cuda)
                started = time.perf_counter()
    sync(cuda)
    feed.close()
    return (seen - warmup) * batch_size / (time.perf_counter() - started)


def train_rate(job, loader_of, epochs: int, steps: int, warmup: int, cuda: bool, batch_size: int
               ) -> tuple[float, float]:
    """(samples/s, median wait for the first batch of epochs 1...) of the job's module trained by
    Lightning on ``loader_of(trainer)`` for ``epochs``."""
    from microforge.trainers.lightning_import import pl

    class Clock(pl.Callback):
        count, started, ended, epoch_started = 0, None, None, None
        waits: list[float] = []

        def on_train_epoch_start(self, trainer, module):
            self.epoch_started = time.perf_counter()

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0 and trainer.current_epoch > 0:  # the epoch boundary: iter() until the first batch
                self.waits.append(time.perf_counter() - self.epoch_started)
            self.count += 1
            if self.count == warmup + 1:
                sync(cuda)
                self.started = time.perf_counter()

        def on_train_end(self, trainer, module):
            sync(cuda)
            self.ended = time.perf_counter()

    torch.manual_seed(0)
    module, clock = job.build_module(), Clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = build_trainer(precision=job.precision, use_gpu=cuda, optimization=job.optimization,
                                gradient_clip_val=job.gradient_clip_val, trainer_options=job.trainer_options,
                                max_epochs=epochs, callbacks=[clock], logger=False, devices=1, limit_val_batches=0)
        trainer.fit(module, train_dataloaders=loader_of(trainer))
    return (clock.count - warmup) * batch_size / (clock.ended - clock.started), statistics.median(clock.waits)


def in_memory_batches(data: SyntheticData, epochs: int, steps: int, batch_size: int, device) -> list[list[dict]]:
    """Each epoch's batches rendered in this process and moved to the device (the step-alone input)."""
    render = import_object(data.renderer, "renderer")
    out = []
    for epoch in range(epochs):
        start = data.val_samples + epoch * data.train_samples
        batches = []
        for b in range(steps):
            arrays = render(data.config, data.seed, range(start + b * batch_size, start + (b + 1) * batch_size),
                            **data.train_kwargs(epoch, epochs))
            batches.append({k: torch.from_numpy(v).to(device) for k, v in arrays.items()})
        out.append(batches)
    return out


def render_seconds_per_sample(data: SyntheticData, epochs: int, batch_size: int) -> float:
    """One data worker's render time per sample (median of one batch per epoch's settings)."""
    render = import_object(data.renderer, "renderer")
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        render(data.config, data.seed, range(10_000_000, 10_000_000 + batch_size), **data.train_kwargs(epoch, epochs))
        times.append((time.perf_counter() - start) / batch_size)
    return statistics.median(times)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="delineation")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a workload option (JSON value), e.g. preset=small, image_size=256")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out")
    parser.add_argument("--data-workers", type=int, nargs="+", default=[1], help="one row per number")
    parser.add_argument("--feeds", nargs="+", choices=("prefetch", "per-epoch"), default=["prefetch", "per-epoch"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training step")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (cuda:0)")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    options = {"preset": "tiny", "image_size": 64} if args.workload == "delineation" else {}
    options.update(parse_options(args.option))

    importlib.import_module("microforge.trainers.lightning_import")  # Lightning's loggers exist from here on

    for name in ("lightning.pytorch", "pytorch_lightning", "lightning_fabric", "lightning.fabric", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger(name).propagate = False
    torch.set_num_threads(args.threads)
    cuda = args.gpu
    device = torch.device("cuda:0") if cuda else None

    from microforge.platform.runtime import ray_runtime

    with tempfile.TemporaryDirectory() as runs, ray_runtime(num_cpus=args.cpus):
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False
        job = get_workload(args.workload).job(options, epochs=args.epochs, runs_dir=runs, batch_size=args.batch_size,
                                              precision=args.precision)
        if not isinstance(job.data, SyntheticData):
            parser.error(f"workload {args.workload} with these options does not train on SyntheticData")
        data = replace(job.data, train_samples=args.steps * args.batch_size, val_samples=0)
        job = replace(job, data=data)
        memory = in_memory_batches(data, args.epochs, args.steps, args.batch_size, device or "cpu")
        render_s = render_seconds_per_sample(data, args.epochs, args.batch_size)
        loads = [os.getloadavg()[0]]
        def step_alone() -> float:
            return train_rate(job, lambda t: EpochBatches(lambda: iter(memory[t.current_epoch]), args.steps),
                              args.epochs, args.steps, args.warmup, cuda, args.batch_size)[0]

        # Each row's step-alone rate is measured right before and right after its "together" run
        # (their mean is the row's reference), so a busy machine skews both sides alike.
        rows = []
        step = step_alone()
        for repeat in range(args.repeats):
            for kind in args.feeds:
                for workers in args.data_workers:
                    alone = pipeline_alone(make_feed(kind, data, args.epochs, args.batch_size, workers, device),
                                           args.epochs, args.warmup, args.batch_size, cuda)
                    feed = make_feed(kind, data, args.epochs, args.batch_size, workers, device)
                    together, wait = train_rate(job, lambda t, f=feed: EpochBatches(lambda: f.epoch(t.current_epoch),
                                                                              args.steps),
                                          args.epochs, args.steps, args.warmup, cuda, args.batch_size)
                    feed.close()
                    before, step = step, step_alone()
                    rows.append((kind, workers, alone, together, (before + step) / 2, wait))
                    loads.append(os.getloadavg()[0])
                    print(f"[run {repeat + 1}] {kind}, {workers} data worker(s): pipeline {alone:.1f}, step "
                          f"{before:.1f}/{step:.1f}, together {together:.1f} samples/s, epoch-start wait {wait * 1e3:.0f} ms; load {loads[-1]:.1f}",
                          flush=True)
        cluster_cpus = ray.cluster_resources().get("CPU", 0)

    step_s = 1.0 / statistics.median(r[4] for r in rows)
    where = f"GPU {torch.cuda.get_device_name()}" if cuda else f"CPU, {args.threads} torch thread(s)"
    print(f"\n{args.workload} {json.dumps(options)}, batch {args.batch_size}, {args.epochs} epochs x {args.steps} "
          f"steps ({args.warmup} warm-up), precision {args.precision}; step on {where}; Ray with {cluster_cpus:g} "
          f"CPUs; {args.repeats} run(s), medians; load average {min(loads):.1f}-{max(loads):.1f} (1 min)")
    print(f"render {render_s * 1e3:.2f} ms/sample per data worker, step {step_s * 1e3:.2f} ms/sample: "
          f"render:step {render_s / step_s:.2f}, --data-workers {recommended_data_workers(render_s, step_s)} "
          "keeps up with the step")
    header = (f"{'feed':<11}{'data workers':>13}{'pipeline alone':>16}{'step alone':>12}{'together':>10}"
              f"{'feed ratio':>12}{'ratio range':>13}{'together/slower':>17}{'epoch-start wait ms':>21}")
    print(header)
    print("-" * len(header))
    for kind in args.feeds:
        for workers in args.data_workers:
            runs = [r for r in rows if r[0] == kind and r[1] == workers]
            alone, together, step = (statistics.median(r[i] for r in runs) for i in (2, 3, 4))
            ratios = [r[3] / r[4] for r in runs]
            slower = statistics.median(r[3] / min(r[2], r[4]) for r in runs)
            print(f"{kind:<11}{workers:>13}{alone:>16.1f}{step:>12.1f}{together:>10.1f}"
                  f"{statistics.median(ratios):>12.3f}{f'{min(ratios):.2f}-{max(ratios):.2f}':>13}{slower:>17.3f}"
                  f"{statistics.median(r[5] for r in runs) * 1e3:>21.0f}")
    print("(samples/s, medians over the runs; ratios are per run: together / the step-alone rate measured right "
          "before and after it; epoch-start wait: from the start of an epoch to its first batch, epochs 2...)")


if __name__ == "__main__":
    main()
