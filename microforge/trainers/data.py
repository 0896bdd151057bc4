"""Ray Data feeding for the launcher: static datasets and synthetic data regenerated per epoch.

A :class:`TrainingData` gives the launcher two kinds of split:

* **static** splits (:meth:`~TrainingData.driver_datasets`): Ray Datasets built on the driver,
  handed to ``TorchTrainer(datasets=...)`` and read in each worker with
  ``ray.train.get_dataset_shard`` (Ray splits them across workers and re-executes them each epoch,
  so a lazily rendered dataset would be re-rendered identically; :class:`SyntheticData`
  materialises its validation split once instead).
* **per-epoch** splits (:meth:`~TrainingData.epoch_dataset`): built inside each training worker
  at the start of every epoch from an :class:`EpochContext`. This is how an epoch's curriculum
  (noise_scale, mixed_prob) reaches the renderer: the settings are plain arguments of the
  epoch's ``map_batches`` call, fixed when the dataset is built, with no state shared between
  processes. A dataset handed to ``TorchTrainer`` could not do this: its plan is fixed at launch
  and re-executed unchanged every epoch (and one dataset per epoch would cost one split
  coordinator actor per epoch). Building it in the worker also fixes which rank renders which
  sample, so a resumed run sees exactly the samples it would have seen.

In both cases the rendering runs in tasks with their own CPU reservation (``cpus_per_task``):
Ray Data tasks for static splits, plain Ray tasks for a :class:`RenderedSplit`; scheduled anywhere
in the cluster, never in the training process, which only pulls finished batches (prefetched
while it computes). The worker reads per-epoch splits through
an :class:`~microforge.trainers.feed.EpochFeed`, which starts the next epoch's dataset while the
current epoch trains and caps the concurrent tasks at ``EpochContext.data_workers``.

:class:`SyntheticData` implements this for any batch renderer ``render(config, seed, indices,
**kwargs) -> dict[str, ndarray]``. Sample indices are laid out so that every sample is a pure
function of ``(seed, index)`` and the index of a sample depends only on ``(split, epoch, i)``:
validation uses ``[0, val_samples)``; epoch ``e`` of training uses
``val_samples + e * train_samples + [0, train_samples)``, of which rank ``r`` of ``W`` takes every
``W``-th (``r, r + W, ...``), the same number on every rank (DDP needs equal step counts).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol

from microforge.platform.errors import ConfigError
from microforge.platform.imports import import_object

if TYPE_CHECKING:
    import numpy as np
    import ray.data

__all__ = [
    "EpochBatches",
    "EpochContext",
    "RenderedSplit",
    "SyntheticData",
    "TrainingData",
    "rank_indices",
    "rebatch",
    "synthetic_dataset",
]


@dataclass(frozen=True)
class EpochContext:
    """Where a per-epoch dataset is built: 0-based ``epoch`` of ``total_epochs``, worker ``rank`` of
    ``world_size``; ``data_workers``: at most this many render/read tasks at a time (None: as many
    as Ray Data schedules). A dataset's rows must not depend on ``data_workers``."""

    epoch: int
    total_epochs: int
    rank: int = 0
    world_size: int = 1
    data_workers: int | None = None


class TrainingData(Protocol):
    """What a training job reads. Must pickle (it travels to the workers)."""

    def describe(self) -> dict[str, Any]:
        """JSON provenance; a resumed run must describe its data identically."""

    def driver_datasets(self) -> dict[str, "ray.data.Dataset"]:
        """Static splits, built on the driver and read through ``get_dataset_shard``."""

    def epoch_splits(self) -> tuple[str, ...]:
        """Names of the splits regenerated every epoch by :meth:`epoch_dataset`."""

    def epoch_dataset(self, split: str, ctx: EpochContext) -> "ray.data.Dataset | RenderedSplit":
        """This rank's part of a per-epoch split (called inside the training worker): a Ray
        Dataset, or a :class:`RenderedSplit` for rows a renderer makes from their index."""

    def rows_per_worker(self, split: str, world_size: int) -> int | None:
        """Rows each worker reads per epoch, or None when unknown (then no epoch length)."""


def rank_indices(n: int, rank: int, world_size: int) -> range:
    """Positions ``rank, rank + W, ...`` below ``W * (n // W)``: equal shares, the remainder dropped."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return range(rank, world_size * (n // world_size), world_size)


def _render_rows(
    batch: dict[str, "np.ndarray"],
    *,
    renderer: str,
    config: dict[str, Any],
    seed: int,
    start: int,
    stride: int,
    kwargs: dict[str, Any],
) -> dict[str, "np.ndarray"]:
    # Runs in a Ray Data task: the row id becomes the sample index, so a sample never depends on
    # how rows were grouped into blocks or tasks.
    indices = (start + stride * batch["id"]).tolist()
    return import_object(renderer, "renderer")(config, seed, indices, **kwargs)


def synthetic_dataset(
    renderer: str,
    config: dict[str, Any],
    seed: int,
    rows: int,
    *,
    start: int = 0,
    stride: int = 1,
    kwargs: dict[str, Any] | None = None,
    rows_per_task: int = 16,
    cpus_per_task: float = 1.0,
    data_workers: int | None = None,
) -> "ray.data.Dataset":
    """A lazy Ray Dataset of ``rows`` rendered samples, indices ``start, start + stride, ...``.

    Args:
        renderer: import path of ``render(config, seed, indices, **kwargs) -> dict`` (batch format).
        config, seed, kwargs: passed to the renderer.
        rows_per_task: samples per Ray Data task; cpus_per_task: CPUs each task reserves.
        data_workers: at most this many render tasks at a time (None: as many as the CPUs allow).
            The rows are the same bytes whatever the number.
    """
    import ray.data

    compute = None if data_workers is None else ray.data.TaskPoolStrategy(size=int(data_workers))
    dataset = ray.data.range(rows, override_num_blocks=max(1, math.ceil(rows / rows_per_task))).map_batches(
        _render_rows,
        batch_size=rows_per_task,
        num_cpus=cpus_per_task,
        compute=compute,
        fn_kwargs={"renderer": renderer, "config": config, "seed": seed, "start": start, "stride": stride,
                   "kwargs": dict(kwargs or {})},
    )
    # Batches in index order whatever the task timing, so training steps are reproducible; no
    # progress bars: these datasets run once per epoch inside a training run.
    dataset.context.execution_options.preserve_order = True
    dataset.context.enable_progress_bars = False
    return dataset


def _render_block(renderer: str, config: dict[str, Any], seed: int, indices: list[int],
                  kwargs: dict[str, Any]) -> dict[str, "np.ndarray"]:
    return import_object(renderer, "renderer")(config, seed, indices, **kwargs)


@dataclass(frozen=True)
class RenderedSplit:
    """One rank's rows of a per-epoch split, rendered by plain Ray tasks (the feed's fast path).

    Row ``i`` is sample ``start + stride * i``; blocks of ``rows_per_task`` rows render as Ray
    tasks (``cpus_per_task`` each, at most ``data_workers`` at a time, None: the cluster's CPUs),
    up to twice that many blocks ahead of the reader, and are read in order. Ray Data's streaming
    executor kept only about a quarter of the allowed render tasks busy when it delivered ~12 MB
    blocks to a training loop (H200 machine: 300 samples/s from 14 data workers that render
    1,400), so the hot path of on-the-fly training data skips it; :meth:`to_dataset` is the same
    rows as a Ray Dataset.
    """

    renderer: str
    config: dict[str, Any]
    seed: int
    rows: int
    start: int = 0
    stride: int = 1
    kwargs: dict[str, Any] = field(default_factory=dict)
    rows_per_task: int = 16
    cpus_per_task: float = 1.0
    data_workers: int | None = None

    def to_dataset(self) -> "ray.data.Dataset":
        return synthetic_dataset(self.renderer, self.config, self.seed, self.rows, start=self.start,
                                 stride=self.stride, kwargs=self.kwargs, rows_per_task=self.rows_per_task,
                                 cpus_per_task=self.cpus_per_task, data_workers=self.data_workers)

    def iter_blocks(self) -> Iterator[dict[str, "np.ndarray"]]:
        """The rendered blocks, in row order (read-only arrays in Ray's object store)."""
        import ray

        # "DEFAULT": never inside the caller's placement group (a Tune trial's training worker
        # captures child tasks into its own bundle, which has no CPU to spare), as Ray Data does.
        render = ray.remote(_render_block).options(num_cpus=self.cpus_per_task, scheduling_strategy="DEFAULT")
        bounds = [(lo, min(self.rows, lo + self.rows_per_task)) for lo in range(0, self.rows, self.rows_per_task)]
        limit = self.data_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        refs: dict[int, Any] = {}
        running: set = set()
        submitted = 0

        def submit(position: int) -> None:
            nonlocal submitted
            while submitted < len(bounds) and len(running) < limit and submitted - position < 2 * limit:
                lo, hi = bounds[submitted]
                indices = [self.start + self.stride * i for i in range(lo, hi)]
                refs[submitted] = render.remote(self.renderer, self.config, self.seed, indices, self.kwargs)
                running.add(refs[submitted])
                submitted += 1

        try:
            for position in range(len(bounds)):
                submit(position)
                head = refs.pop(position)
                while head in running:
                    ready, _ = ray.wait(list(running), num_returns=1)
                    running.difference_update(ready)
                    submit(position)
                yield ray.get(head)
        finally:
            for ref in running:  # the reader stopped early: drop what is still rendering
                ray.cancel(ref)

    def iter_batches(self, batch_size: int) -> Iterator[dict[str, "np.ndarray"]]:
        """Batches of ``batch_size`` rows in order (the last may be smaller), writable arrays."""
        yield from rebatch(self.iter_blocks(), batch_size)


def rebatch(blocks: Iterable[dict[str, "np.ndarray"]], batch_size: int) -> Iterator[dict[str, "np.ndarray"]]:
    """Dict-of-array blocks regrouped into batches of ``batch_size`` rows (the last may be smaller);
    every batch is a fresh, writable copy."""
    import numpy as np

    pending: list[dict[str, np.ndarray]] = []
    have = 0
    for block in blocks:
        pending.append(block)
        have += len(next(iter(block.values())))
        while have >= batch_size:
            joined = {k: np.concatenate([b[k] for b in pending]) for k in pending[0]}
            yield {k: v[:batch_size] for k, v in joined.items()}
            have -= batch_size
            pending = [{k: v[batch_size:] for k, v in joined.items()}] if have else []
    if have:
        yield {k: np.concatenate([b[k] for b in pending]) for k in pending[0]}


@dataclass(frozen=True)
class SyntheticData:
    """Training and validation data rendered on the fly by a batch renderer.

    Args:
        renderer: import path of ``render(config, seed, indices, **kwargs) -> dict`` returning
            numeric arrays with a leading batch axis (e.g. ``render_blob_batch``).
        config: the renderer's config as JSON (its first argument).
        seed: dataset seed.
        train_samples: samples per training epoch (all ranks together).
        val_samples: validation samples, the same every epoch; 0 for none.
        schedule: import path of ``schedule(epoch, total_epochs) -> dict`` of extra renderer
            keyword arguments for a training epoch (e.g. the noise curriculum); None for none.
        val_kwargs: renderer keyword arguments of the validation split.
        rows_per_task: samples rendered per Ray Data task (its block size).
        cpus_per_task: CPUs reserved by each render task.

    Raises:
        ConfigError: a sample count or task setting out of range.
    """

    renderer: str
    config: dict[str, Any]
    seed: int
    train_samples: int
    val_samples: int = 0
    schedule: str | None = None
    val_kwargs: dict[str, Any] = field(default_factory=dict)
    rows_per_task: int = 16
    cpus_per_task: float = 1.0

    def __post_init__(self) -> None:
        if self.train_samples < 1:
            raise ConfigError(f"train_samples must be >= 1, got {self.train_samples}")
        if self.val_samples < 0:
            raise ConfigError(f"val_samples must be >= 0, got {self.val_samples}")
        if self.rows_per_task < 1 or self.cpus_per_task <= 0:
            raise ConfigError("rows_per_task must be >= 1 and cpus_per_task > 0")

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def driver_datasets(self) -> dict[str, "ray.data.Dataset"]:
        if not self.val_samples:
            return {}
        # Rendered once, not every epoch: the rows are the same each time, and re-rendering them
        # competed with the next training epoch's prefetch (~3 s of a 12-23 s detector epoch on
        # an H200 machine).
        return {"val": synthetic_dataset(self.renderer, self.config, self.seed, self.val_samples,
                                         kwargs=dict(self.val_kwargs), rows_per_task=self.rows_per_task,
                                         cpus_per_task=self.cpus_per_task).materialize()}

    def epoch_splits(self) -> tuple[str, ...]:
        return ("train",)

    def train_kwargs(self, epoch: int, total_epochs: int) -> dict[str, Any]:
        """Renderer keyword arguments of training epoch ``epoch`` (from ``schedule``)."""
        return dict(import_object(self.schedule, "schedule")(epoch, total_epochs)) if self.schedule else {}

    def epoch_dataset(self, split: str, ctx: EpochContext) -> RenderedSplit:
        if split != "train":
            raise ConfigError(f"SyntheticData regenerates only 'train' per epoch, not '{split}'")
        share = rank_indices(self.train_samples, ctx.rank, ctx.world_size)
        return RenderedSplit(self.renderer, self.config, self.seed, len(share),
                             start=self.val_samples + ctx.epoch * self.train_samples + share.start,
                             stride=share.step, kwargs=self.train_kwargs(ctx.epoch, ctx.total_epochs),
                             rows_per_task=self.rows_per_task, cpus_per_task=self.cpus_per_task,
                             data_workers=ctx.data_workers)

    def rows_per_worker(self, split: str, world_size: int) -> int | None:
        if split == "train":
            return self.train_samples // world_size
        return None


class EpochBatches:
    """An iterable of batches that opens a fresh iterator at each epoch (what Lightning consumes).

    Lightning calls ``iter()`` at the start of every epoch; ``open_epoch`` is called there, so a
    per-epoch dataset is built exactly when its epoch begins. ``len()`` is the number of batches
    per epoch when known (Lightning needs it for step-based LR schedules).
    """

    def __init__(self, open_epoch: Callable[[], Iterable[Any]], batches: int | None = None) -> None:
        self._open_epoch = open_epoch
        self._batches = batches

    def __iter__(self) -> Iterator[Any]:
        return iter(self._open_epoch())

    @property
    def batches(self) -> int | None:
        """Batches per epoch, or None when unknown."""
        return self._batches

    def __len__(self) -> int:
        if self._batches is None:
            raise TypeError("the number of batches per epoch is unknown")
        return self._batches
