"""The generic Ray Train launcher: any LightningModule, data from Ray Data, checkpoints, resume, export.

``launch(job)`` runs a :class:`TrainingJob` under ``ray.train.torch.TorchTrainer``: each worker
builds the LightningModule named in the job (through :mod:`microforge.trainers.registry`), a
Lightning ``Trainer`` with Ray's DDP strategy and cluster environment, and reads its data from Ray
Data (see :mod:`microforge.trainers.data`). After every epoch the workers report their metrics
and a checkpoint to Ray Train. When training ends, the best checkpoint is exported as a model
artifact (``model.safetensors`` + ``model.json``).

Run directory ``<runs_dir>/<name>/``::

    run.json                         the job (module, config, data, scaling...) and its status
    checkpoint_<time>/               Ray Train checkpoints (the best and the latest are kept)
        checkpoint.ckpt              Lightning checkpoint (weights, optimizer, schedulers, loops)
        progress.json                epoch, step and metrics, readable without torch
    tensorboard/                     TensorBoard event files (rank 0)
    model/                           the exported artifact
    checkpoint_manager_snapshot.json Ray's own index, through which a relaunch resumes

Resume: launching a job under the name of an existing run (``resume=True``) lets Ray Train
restore its checkpoint index; each worker then gets the latest checkpoint from
``ray.train.get_checkpoint()`` and Lightning continues from it (epoch counter, optimizer, LR
schedule, early-stopping state). The run must train the same module, module config and data.

A module is exportable when it has ``export_model() -> ModelExport``. Metrics are reported from
the callbacks' ``on_train_epoch_end``, which Lightning runs before the module's own hook: log
epoch metrics in training/validation steps or ``on_validation_epoch_end``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from microforge.platform.errors import ConfigError, MicroforgeError
from microforge.platform.storage import atomic_write_text, ensure_writable_dir

from .data import EpochBatches, EpochContext, TrainingData, import_callable
from .registry import resolve_training_module

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "CHECKPOINT_FILE",
    "EarlyStopping",
    "ModelExport",
    "RunError",
    "Scaling",
    "TrainingJob",
    "TrainingResult",
    "find_run",
    "latest_checkpoint",
    "launch",
    "load_job",
    "plan_worker_cpus",
    "read_run",
]

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
RUN_FORMAT = 1
CHECKPOINT_FILE = "checkpoint.ckpt"
PROGRESS_FILE = "progress.json"
ARTIFACT_DIR = "model"
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "64-true")
# CPUs kept free for the Ray Data tasks that render or read the training data: if the training
# actors held every CPU, no render task could start and the first batch would never arrive.
DATA_CPU_RESERVE = 1.0
MIN_WORKER_CPUS = 0.25


class RunError(MicroforgeError):
    """A run directory cannot be created, resumed or read."""


@dataclass(frozen=True)
class Scaling:
    """How many training workers and what each reserves.

    Args:
        num_workers: data-parallel workers (one process each, DDP between them).
        use_gpu: one GPU per worker (or ``gpus_per_worker``) and CUDA training.
        cpus_per_worker: CPUs each worker reserves; None plans it with :func:`plan_worker_cpus`.
        gpus_per_worker: GPUs each worker reserves when ``use_gpu``.
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ConfigError(f"Scaling.num_workers must be an integer >= 1, got {self.num_workers!r}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ConfigError(f"Scaling.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.use_gpu and self.gpus_per_worker <= 0:
            raise ConfigError(f"Scaling.gpus_per_worker must be > 0 with use_gpu, got {self.gpus_per_worker}")


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the monitored metric has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = 10
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience < 1 or self.min_delta < 0:
            raise ConfigError(f"EarlyStopping needs patience >= 1 and min_delta >= 0, got {self}")


@dataclass(frozen=True)
class TrainingJob:
    """Everything the launcher needs to train one module; everything but ``data`` is JSON.

    Args:
        module: registry name of the LightningModule (or ``"package.module:Class"``).
        module_config: keyword arguments of the module's constructor (JSON-serialisable).
        data: the datasets (see :class:`microforge.trainers.data.TrainingData`); splits
            ``"train"`` and optionally ``"val"``.
        epochs: total epochs of the run (a resumed run continues up to this number).
        runs_dir: parent directory of run directories.
        name: run name (the run directory's name); None makes ``<module>-<UTC time>``.
        scaling: workers and their resources.
        batch_size: samples per batch and worker.
        precision: Lightning precision; ``"auto"`` is bf16-mixed (or 16-mixed) on a GPU and
            32-true on CPUs.
        gradient_clip_val: gradient-norm clipping (None: off).
        monitor, monitor_mode: the metric that ranks checkpoints (the best one is exported) and
            drives early stopping.
        early_stopping: None disables it.
        checkpoints_to_keep: best checkpoints kept (the latest is always kept as well).
        seed: seed of the module's initial weights (data randomness lives in ``data``).
        trainer_options: extra Lightning ``Trainer`` arguments (e.g. ``limit_train_batches``).
    """

    module: str
    module_config: dict[str, Any]
    data: TrainingData
    epochs: int
    runs_dir: str | Path
    name: str | None = None
    scaling: Scaling = field(default_factory=Scaling)
    batch_size: int = 8
    precision: str = "auto"
    gradient_clip_val: float | None = 1.0
    monitor: str = "val_loss"
    monitor_mode: Literal["min", "max"] = "min"
    early_stopping: EarlyStopping | None = None
    checkpoints_to_keep: int = 2
    seed: int = 0
    trainer_options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Validate the fields that do not need Ray.

        Raises:
            ConfigError: naming the field to change.
        """
        for name in ("epochs", "batch_size", "checkpoints_to_keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainingJob.{name} must be an integer >= 1, got {value!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"TrainingJob.precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.monitor_mode not in ("min", "max"):
            raise ConfigError(f"TrainingJob.monitor_mode must be 'min' or 'max', got '{self.monitor_mode}'")
        if self.gradient_clip_val is not None and self.gradient_clip_val <= 0:
            raise ConfigError(f"TrainingJob.gradient_clip_val must be > 0 or None, got {self.gradient_clip_val}")
        rows = self.data.rows_per_worker("train", self.scaling.num_workers)
        if rows is not None and rows < 1:
            raise ConfigError(
                f"the training split has fewer samples than the {self.scaling.num_workers} workers: "
                "raise the number of training samples or lower the number of workers"
            )
        for name in ("module_config", "trainer_options"):  # stored in run.json and the artifact
            try:
                json.dumps(getattr(self, name))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"TrainingJob.{name} must be JSON-serialisable ({exc})") from None

    def record(self) -> dict[str, Any]:
        """The JSON stored in ``run.json`` (with the data's class, so :func:`load_job` can rebuild it)."""
        data_cls = type(self.data)
        record = {
            "format": RUN_FORMAT,
            "module": self.module,
            "module_config": self.module_config,
            "data_class": f"{data_cls.__module__}:{data_cls.__qualname__}",
            "data": self.data.describe(),
            "epochs": self.epochs,
            "scaling": asdict(self.scaling),
            "batch_size": self.batch_size,
            "precision": self.precision,
            "gradient_clip_val": self.gradient_clip_val,
            "monitor": self.monitor,
            "monitor_mode": self.monitor_mode,
            "early_stopping": asdict(self.early_stopping) if self.early_stopping else None,
            "checkpoints_to_keep": self.checkpoints_to_keep,
            "seed": self.seed,
            "trainer_options": self.trainer_options,
        }
        return json.loads(json.dumps(record))  # tuples -> lists: compares equal to a stored record


@dataclass(frozen=True)
class ModelExport:
    """What a module exports: the ``nn.Module`` to save, its registry name and constructor config,
    and how inputs must be preprocessed (stored in ``model.json``)."""

    name: str
    config: dict[str, Any]
    model: "nn.Module"
    preprocessing: dict[str, Any]


@dataclass(frozen=True)
class TrainingResult:
    """Outcome of :func:`launch`.

    Attributes:
        run_dir: the run directory.
        best_checkpoint: directory of the best checkpoint by ``job.monitor`` (None if none).
        metrics: metrics of the best checkpoint.
        last_metrics: metrics of the last epoch.
        epochs_completed: epochs trained in the whole run (resumes included).
        artifact: the exported artifact directory (None if the module is not exportable).
        seconds: wall time of this launch.
    """

    run_dir: Path
    best_checkpoint: Path | None
    metrics: dict[str, Any]
    last_metrics: dict[str, Any]
    epochs_completed: int
    artifact: Path | None
    seconds: float


# --------------------------------------------------------------------------------------------
# Run directories


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def find_run(run: str | Path, runs_dir: str | Path | None = None) -> Path:
    """Resolve ``run`` as a run directory path, else as a run name under ``runs_dir``.

    Raises:
        RunError: no such run directory, or it has no ``run.json``.
    """
    candidates = [Path(run)]
    if runs_dir is not None and not Path(run).is_absolute():
        candidates.append(Path(runs_dir) / run)
    for path in candidates:
        if path.is_dir():
            if not (path / RUN_FILE).is_file():
                raise RunError(f"{path} is not a microforge run directory (no {RUN_FILE})")
            return path.absolute()
    where = f" (looked in {runs_dir})" if runs_dir is not None else ""
    raise RunError(f"no run '{run}' to resume{where}")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run directory.

    Raises:
        RunError: missing, unparsable or of an unknown format.
    """
    path = Path(run_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{run_dir} is not a microforge run directory (no {RUN_FILE})") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} is unreadable ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT or "module" not in record:
        raise RunError(f"{path} is not a run record of format {RUN_FORMAT}")
    return record


def _write_run(run_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_text(run_dir / RUN_FILE, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint of a run and its ``progress.json``, or None.

    Checkpoint directories are named by creation time, so the newest sorts last.
    """
    found = sorted(Path(run_dir).glob("checkpoint_*/" + PROGRESS_FILE))
    for progress in reversed(found):
        if (progress.parent / CHECKPOINT_FILE).is_file():
            try:
                return progress.parent, json.loads(progress.read_text())
            except ValueError:
                continue
    return None


def load_job(run: str | Path, runs_dir: str | Path | None = None, **overrides: Any) -> TrainingJob:
    """Rebuild the job of an existing run from its ``run.json``; ``overrides`` replace fields.

    Raises:
        RunError: no such run, or its record cannot be turned back into a job.
    """
    run_dir = find_run(run, runs_dir)
    record = read_run(run_dir)
    try:
        data = import_callable(record["data_class"])(**record["data"])
        job = TrainingJob(
            module=record["module"],
            module_config=record["module_config"],
            data=data,
            epochs=record["epochs"],
            runs_dir=run_dir.parent,
            name=run_dir.name,
            scaling=Scaling(**record["scaling"]),
            batch_size=record["batch_size"],
            precision=record["precision"],
            gradient_clip_val=record["gradient_clip_val"],
            monitor=record["monitor"],
            monitor_mode=record["monitor_mode"],
            early_stopping=EarlyStopping(**record["early_stopping"]) if record["early_stopping"] else None,
            checkpoints_to_keep=record["checkpoints_to_keep"],
            seed=record["seed"],
            trainer_options=record["trainer_options"],
        )
    except (KeyError, TypeError, ConfigError) as exc:
        raise RunError(f"{run_dir / RUN_FILE} cannot be turned back into a training job ({exc})") from None
    return replace(job, **overrides)


def _check_resumable(job: TrainingJob, run_dir: Path) -> tuple[dict[str, Any], int]:
    """The stored record and the epochs already done; raise unless ``job`` can continue the run."""
    if not run_dir.is_dir():
        raise RunError(f"no run '{job.name}' to resume in {run_dir.parent}")
    record = read_run(run_dir)
    new = job.record()
    differing = [key for key in ("module", "module_config", "data_class", "data") if record.get(key) != new[key]]
    if differing:
        details = "; ".join(_describe_difference(key, record.get(key), new[key]) for key in differing)
        raise RunError(f"cannot resume {run_dir}: the job differs from the run's ({details})")
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise RunError(f"cannot resume {run_dir}: it has no checkpoint yet (it stopped during its first epoch)")
    done = int(latest[1]["epoch"]) + 1
    if job.epochs <= done:
        raise RunError(f"run {run_dir.name} has already trained {done} of {job.epochs} epochs; "
                       f"ask for more than {done} epochs to continue it")
    return record, done


def _describe_difference(key: str, old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return ", ".join(f"{key}.{k}: run has {old.get(k)!r}, job has {new.get(k)!r}" for k in keys)
    return f"{key}: run has {old!r}, job has {new!r}"


# --------------------------------------------------------------------------------------------
# Resources


def plan_worker_cpus(scaling: Scaling, cluster_cpus: float) -> float:
    """CPUs each training worker reserves.

    ``scaling.cpus_per_worker`` when given; otherwise 1 CPU (Ray's default), lowered (down to
    0.25) so that the workers leave :data:`DATA_CPU_RESERVE` CPUs of the cluster to the Ray Data
    tasks that produce their batches. On a 2-CPU machine 2 workers get 0.5 CPU each and
    synthesis keeps one CPU; on a cluster with spare CPUs nothing changes.
    """
    if scaling.cpus_per_worker is not None:
        return float(scaling.cpus_per_worker)
    free = (cluster_cpus - DATA_CPU_RESERVE) / scaling.num_workers
    return max(MIN_WORKER_CPUS, min(1.0, math.floor(free * 100) / 100))


# --------------------------------------------------------------------------------------------
# Inside each training worker


def _resolve_precision(precision: str, use_gpu: bool) -> str:
    import torch

    if precision != "auto":
        return precision
    if use_gpu and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _make_report_callback():
    from .lightning_import import pl
    import ray.train
    from ray.train import Checkpoint

    class ReportCheckpoint(pl.Callback):
        """Report metrics and a checkpoint to Ray Train at the end of every training epoch.

        Like ``ray.train.lightning.RayTrainReportCallback``, but only rank 0 uploads a
        checkpoint (DDP ranks hold the same weights), and a ``progress.json`` with the epoch and
        metrics is written next to it so that a run can be inspected without loading torch files.
        Lightning runs validation before ``on_train_epoch_end``, so validation metrics are included.
        """

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
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


def _loaders(job: TrainingJob, static_splits: list[str], current_epoch: Callable[[], int], rank: int,
             world: int) -> dict[str, EpochBatches]:
    import ray.train

    loaders = {}
    epoch_splits = job.data.epoch_splits()
    for split in ("train", "val"):
        if split in epoch_splits:
            def open_epoch(split: str = split):
                ctx = EpochContext(current_epoch(), job.epochs, rank, world)
                return job.data.epoch_dataset(split, ctx).iter_torch_batches(
                    batch_size=job.batch_size, prefetch_batches=2)
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
    return loaders


def _train_worker(config: dict[str, Any]) -> None:
    from .lightning_import import pl
    import ray.train
    import torch
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    job: TrainingJob = config["job"]
    run_dir = Path(config["run_dir"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config["torch_threads"])

    pl.seed_everything(job.seed, verbose=False)
    module = resolve_training_module(job.module)(**job.module_config)
    trainer: pl.Trainer | None = None  # the loaders read its epoch counter once fit() runs
    loaders = _loaders(job, config["static_splits"], lambda: trainer.current_epoch, rank, world)
    batches = loaders["train"].batches
    callbacks = [_make_report_callback(), _make_epoch_log_callback(job.epochs),
                 pl.callbacks.LearningRateMonitor(logging_interval="epoch")]
    if job.early_stopping is not None:
        callbacks.append(pl.callbacks.EarlyStopping(monitor=job.monitor, mode=job.monitor_mode,
                                                patience=job.early_stopping.patience,
                                                min_delta=job.early_stopping.min_delta))
    trainer_options = {"log_every_n_steps": max(1, min(50, batches or 50)), **job.trainer_options}
    trainer = pl.Trainer(
        max_epochs=job.epochs,
        accelerator="gpu" if job.scaling.use_gpu else "cpu",
        devices="auto",
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        callbacks=callbacks,
        logger=pl.loggers.TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
        precision=_resolve_precision(job.precision, job.scaling.use_gpu),
        gradient_clip_val=job.gradient_clip_val,
        default_root_dir=str(run_dir),
        enable_checkpointing=False,  # ReportCheckpoint does it, through Ray Train's storage
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # Ray Data already gives each rank its own rows
        **trainer_options,
    )
    trainer = prepare_trainer(trainer)
    fit = {"train_dataloaders": loaders["train"], "val_dataloaders": loaders.get("val")}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        trainer.fit(module, **fit)
        return
    with checkpoint.as_directory() as directory:
        trainer.fit(module, ckpt_path=str(Path(directory) / CHECKPOINT_FILE), **fit)


# --------------------------------------------------------------------------------------------
# Driver


def _build_module(job: TrainingJob):
    cls = resolve_training_module(job.module)
    try:
        return cls(**job.module_config)
    except TypeError as exc:
        raise ConfigError(f"training module '{job.module}': {exc}") from None


def launch(job: TrainingJob, *, resume: bool = False, address: str | None = None,
           callbacks: Sequence[Any] = ()) -> TrainingResult:
    """Train ``job`` on Ray and export its best model.

    Args:
        job: what to train; ``job.name`` names the run (required with ``resume``).
        resume: continue the run ``job.name`` from its latest checkpoint.
        address: Ray cluster address; None uses the running Ray or starts an embedded one.
        callbacks: Ray Train ``UserCallback``s of the run (e.g. Tune's report callback when a
            Tune trial drives the run).

    Returns:
        :class:`TrainingResult`.

    Raises:
        ConfigError: an invalid job (checked before anything is written).
        RunError: a new run's directory exists already; a resumed run is missing, was made by a
            different job, has no checkpoint or already has ``job.epochs`` epochs.
        ray.train.TrainingFailedError: a worker failed during training.
    """
    from microforge.platform.runtime import ray_runtime

    job.check()
    _build_module(job)  # configuration errors surface here, not inside a worker
    runs_dir = ensure_writable_dir(job.runs_dir)
    if resume:
        if not job.name:
            raise RunError("resume needs the name of the run to continue")
        run_dir = runs_dir / job.name
        record, done = _check_resumable(job, run_dir)
        log.info("resuming %s after epoch %d of %d", run_dir, done, job.epochs)
        record.update(job.record(), status="running", updated=_utc_now())
    else:
        name = job.name or f"{job.module.replace(':', '_')}-{datetime.now():%Y%m%d-%H%M%S}"
        job = replace(job, name=name)
        run_dir = runs_dir / name
        if run_dir.exists():
            raise RunError(f"run directory {run_dir} exists already: resume it or choose another name")
        record = {**job.record(), "name": name, "status": "running", "created": _utc_now()}
    started = time.perf_counter()
    try:
        with ray_runtime(address):
            result = _fit(job, run_dir, record, callbacks)
    except BaseException:
        if run_dir.is_dir():  # say so in run.json; its checkpoints stay resumable
            record.update(status="failed", updated=_utc_now())
            _write_run(run_dir, record)
        raise
    result = replace(result, seconds=time.perf_counter() - started)
    record.update(status="finished", updated=_utc_now(), epochs_completed=result.epochs_completed,
                  best_checkpoint=str(result.best_checkpoint) if result.best_checkpoint else None,
                  best_metrics=result.metrics, artifact=str(result.artifact) if result.artifact else None)
    _write_run(run_dir, record)
    return result


def _fit(job: TrainingJob, run_dir: Path, record: dict[str, Any], callbacks: Sequence[Any] = ()
         ) -> TrainingResult:
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cpus = plan_worker_cpus(job.scaling, ray.cluster_resources().get("CPU", 1.0))
    resources = {"CPU": cpus}
    if job.scaling.use_gpu:
        resources["GPU"] = job.scaling.gpus_per_worker
    datasets = job.data.driver_datasets()
    run_dir.mkdir(parents=True, exist_ok=True)
    record["resources_per_worker"] = resources
    _write_run(run_dir, record)
    log.info("training %s on %d worker(s) with %s each; run directory %s",
             job.module, job.scaling.num_workers, resources, run_dir)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"job": job, "run_dir": str(run_dir), "static_splits": list(datasets),
                           "torch_threads": max(1, int(cpus))},
        scaling_config=ScalingConfig(num_workers=job.scaling.num_workers, use_gpu=job.scaling.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            checkpoint_config=CheckpointConfig(num_to_keep=job.checkpoints_to_keep,
                                               checkpoint_score_attribute=job.monitor,
                                               checkpoint_score_order=job.monitor_mode),
            callbacks=list(callbacks),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    last = dict(result.metrics or {})
    best = _best_checkpoint(result, job)
    best_dir = Path(best.path) if best is not None else None
    best_metrics = json.loads((best_dir / PROGRESS_FILE).read_text()) if best_dir else {}
    artifact = _export(job, run_dir, best_dir, best_metrics) if best_dir else None
    return TrainingResult(run_dir=run_dir, best_checkpoint=best_dir, metrics=best_metrics, last_metrics=last,
                          epochs_completed=int(last.get("epoch", -1)) + 1, artifact=artifact, seconds=0.0)


def _best_checkpoint(result, job: TrainingJob):
    ranked = [(c, m) for c, m in (result.best_checkpoints or []) if job.monitor in m]
    if not ranked:
        return result.checkpoint
    pick = max if job.monitor_mode == "max" else min
    return pick(ranked, key=lambda cm: cm[1][job.monitor])[0]


def _export(job: TrainingJob, run_dir: Path, checkpoint_dir: Path, metrics: dict[str, Any]) -> Path | None:
    from .lightning_import import pl
    import ray
    import torch

    from microforge import __version__
    from microforge.platform.artifact import save_artifact

    module = _build_module(job)
    if not hasattr(module, "export_model"):
        log.info("%s has no export_model(); no artifact exported", job.module)
        return None
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    export: ModelExport = module.export_model()
    provenance = {
        "run": str(run_dir),
        "run_name": run_dir.name,
        "checkpoint": checkpoint_dir.name,
        "epoch": metrics.get("epoch"),
        "training_module": job.module,
        "module_config": job.module_config,
        "data": job.data.describe(),
        "epochs": job.epochs,
        "batch_size": job.batch_size,
        "num_workers": job.scaling.num_workers,
        "seed": job.seed,
        "versions": {"microforge": __version__, "torch": torch.__version__, "ray": ray.__version__,
                     "lightning": pl.__version__},
        "created": _utc_now(),
    }
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    return save_artifact(run_dir / ARTIFACT_DIR, export.model.state_dict(),
                         architecture={"name": export.name, "config": export.config},
                         preprocessing=export.preprocessing, metrics=numeric, provenance=provenance)
