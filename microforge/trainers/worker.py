"""Inside each Ray Train worker: build the module, its data loaders and the Lightning ``Trainer``,
report metrics and checkpoints at the job's cadence, and fit (resuming from Ray's checkpoint)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from microforge.platform.errors import ConfigError
from microforge.platform.imports import import_object

from .data import EpochBatches, EpochContext
from .feed import EpochFeed, default_data_workers
from .job import TrainingJob, plan_worker_cpus

__all__ = ["CHECKPOINT_FILE", "PROGRESS_FILE", "train_worker"]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.ckpt"
PROGRESS_FILE = "progress.json"


def _make_report_callback(job: TrainingJob, validates: bool):
    from .lightning_import import pl
    import ray.train
    from ray.train import Checkpoint

    every, unit = job.cadence.every, job.cadence.unit

    class ReportCheckpoint(pl.Callback):
        """Report metrics and a checkpoint to Ray Train every ``every`` epochs or steps (and at the
        last epoch), like ``ray.train.lightning.RayTrainReportCallback`` but at the job's cadence.

        Only rank 0 uploads a checkpoint (DDP ranks hold the same weights), and a ``progress.json``
        with the epoch, step and metrics is written next to it so that a run can be inspected
        without loading torch files. Lightning validates before ``on_train_epoch_end``, so
        epoch reports include validation metrics. A step is one training batch, whatever the
        number of optimizers a manual-optimisation module steps in it.
        """

        def __init__(self) -> None:
            self.last_reported_batch = -1

        def _report(self, trainer: pl.Trainer, batches: int) -> None:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            metrics.update(epoch=trainer.current_epoch, step=batches)
            tmp = Path(tempfile.mkdtemp(prefix="microforge-ckpt-"))
            try:
                trainer.save_checkpoint(tmp / CHECKPOINT_FILE, weights_only=False)  # collective: every rank calls it
                checkpoint = None
                if trainer.is_global_zero:
                    (tmp / PROGRESS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
                    checkpoint = Checkpoint.from_directory(tmp)
                ray.train.report(metrics=metrics, checkpoint=checkpoint)
                trainer.strategy.barrier("microforge-report")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            self.last_reported_batch = batches

        @staticmethod
        def _batches(trainer: pl.Trainer) -> int:
            return int(trainer.fit_loop.epoch_loop.batch_progress.total.processed)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            batches = self._batches(trainer)
            final_batch = (trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
                           and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
            if (job.max_steps is not None and batches >= job.max_steps) or (unit == "steps" and final_batch):
                trainer.should_stop = True  # Lightning validates before it stops, off the step cadence too
            # With validation data, step reports wait for the validation Lightning runs at the
            # same cadence (on_validation_end), so they carry its metrics.
            if unit == "steps" and batches % every == 0 and not validates:
                self._report(trainer, batches)

        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if unit == "steps" and not trainer.sanity_checking and self._batches(trainer) != self.last_reported_batch:
                self._report(trainer, self._batches(trainer))

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            epoch = trainer.current_epoch + 1
            last = epoch >= (trainer.max_epochs or epoch) or trainer.should_stop
            due = (unit == "epochs" and epoch % every == 0) or last
            if due and self._batches(trainer) != self.last_reported_batch:
                self._report(trainer, self._batches(trainer))

    return ReportCheckpoint()


def _make_epoch_log_callback(total_epochs: int):
    from .lightning_import import pl

    class EpochLog(pl.Callback):
        """One log line per epoch on rank 0 (Lightning's bar would flood Ray's forwarded logs)."""

        def __init__(self) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.is_global_zero:
                shown = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items()))
                log.info("epoch %d/%d (%.1f s): %s", trainer.current_epoch + 1, total_epochs,
                         time.perf_counter() - self.started, shown)

    return EpochLog()


def _data_workers(job: TrainingJob, world: int) -> int:
    """``job.data_workers``, or every CPU the training workers leave, shared between them."""
    import ray

    if job.data_workers is not None:
        return job.data_workers
    cluster = ray.cluster_resources().get("CPU", 1.0)
    return default_data_workers(cluster, world * plan_worker_cpus(job.scaling, cluster), world)


def _loaders(job: TrainingJob, static_splits: list[str], current_epoch: Callable[[], int], rank: int,
             world: int, device: Any = None) -> tuple[dict[str, EpochBatches], list[EpochFeed]]:
    """The loaders Lightning reads, and the feeds of the per-epoch splits (to close after fit).

    A per-epoch split is read through an :class:`EpochFeed`: the next epoch's dataset starts while
    this epoch trains, at most ``data_workers`` render tasks at a time, batches delivered on
    ``device`` (pinned and copied ahead on CUDA). Static splits stream from their shard.
    """
    import ray.train

    loaders, feeds = {}, []
    epoch_splits = job.data.epoch_splits()
    data_workers = _data_workers(job, world) if epoch_splits else None
    for split in ("train", "val"):
        if split in epoch_splits:
            def open_dataset(epoch: int, split: str = split):
                return job.data.epoch_dataset(split, EpochContext(epoch, job.epochs, rank, world, data_workers))

            feed = EpochFeed(open_dataset, job.epochs, job.batch_size, device=device)
            feeds.append(feed)

            def open_epoch(feed: EpochFeed = feed):
                return feed.epoch(current_epoch())
        elif split in static_splits:
            shard = ray.train.get_dataset_shard(split)

            def open_epoch(shard=shard):
                return shard.iter_torch_batches(batch_size=job.batch_size, prefetch_batches=2)
        else:
            continue
        rows = job.data.rows_per_worker(split, world)
        loaders[split] = EpochBatches(open_epoch, None if rows is None else math.ceil(rows / job.batch_size))
    if "train" not in loaders:
        raise ConfigError("the training data has no 'train' split")
    if feeds:
        log.info("rank %d: per-epoch data with %d data worker(s), next epoch prefetched", rank, data_workers)
    return loaders, feeds


def _validation_cadence(job: TrainingJob, loaders: dict[str, EpochBatches]) -> dict[str, Any]:
    """Lightning options that validate every ``cadence.every`` batches for a cadence in steps
    (across epoch boundaries), so each step report has fresh validation metrics."""
    if job.cadence.unit != "steps" or "val" not in loaders:
        return {}
    return {"val_check_interval": job.cadence.every, "check_val_every_n_epoch": None}


def train_worker(config: dict[str, Any]) -> None:
    """The ``train_loop_per_worker`` of the launcher's ``TorchTrainer``."""
    from .lightning_import import pl
    import ray.train
    import torch
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer
    from ray.train.torch import get_device

    from .trainer_factory import build_trainer

    job: TrainingJob = config["job"]
    run_dir = Path(config["run_dir"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config["torch_threads"])

    pl.seed_everything(job.seed, verbose=False)
    module = import_object(job.module, "training module")(**job.module_config)
    trainer: pl.Trainer | None = None  # the loaders read its epoch counter once fit() runs
    device = get_device() if job.scaling.use_gpu else None
    loaders, feeds = _loaders(job, config["static_splits"], lambda: trainer.current_epoch, rank, world, device)
    batches = loaders["train"].batches
    callbacks = [_make_report_callback(job, "val" in loaders), _make_epoch_log_callback(job.epochs),
                 pl.callbacks.LearningRateMonitor(logging_interval="epoch")]
    if job.early_stopping is not None:
        callbacks.append(pl.callbacks.EarlyStopping(monitor=job.monitor, mode=job.monitor_mode,
                                                    patience=job.early_stopping.patience,
                                                    min_delta=job.early_stopping.min_delta))
    # Manual-optimisation modules must find unused parameters (e.g. a GAN discriminator's
    # decoders used only on real images), which DDP otherwise rejects.
    strategy = RayDDPStrategy(find_unused_parameters=True) if job.optimization == "manual" else RayDDPStrategy()
    trainer = build_trainer(
        precision=job.precision, use_gpu=job.scaling.use_gpu, optimization=job.optimization,
        gradient_clip_val=job.gradient_clip_val,
        trainer_options={"log_every_n_steps": max(1, min(50, batches or 50)), **_validation_cadence(job, loaders),
                         **job.trainer_options},
        max_epochs=job.epochs, callbacks=callbacks,
        logger=pl.loggers.TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
        devices="auto", strategy=strategy, plugins=[RayLightningEnvironment()], default_root_dir=str(run_dir),
        use_distributed_sampler=False,  # Ray Data already gives each rank its own rows
    )
    trainer = prepare_trainer(trainer)
    fit = {"train_dataloaders": loaders["train"], "val_dataloaders": loaders.get("val")}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.get("start_from"):  # a new run from another run's checkpoint
        checkpoint = ray.train.Checkpoint.from_directory(config["start_from"])
    try:
        if checkpoint is None:
            trainer.fit(module, **fit)
            return
        with checkpoint.as_directory() as directory:
            trainer.fit(module, ckpt_path=str(Path(directory) / CHECKPOINT_FILE), **fit)
    finally:
        for feed in feeds:
            feed.close()
