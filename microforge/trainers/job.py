"""What one training run is: the :class:`TrainingJob` spec, its scaling and early stopping.

A job is built by a workload (:meth:`microforge.trainers.workload.Workload.job`) or by hand for
any LightningModule; everything but ``data`` is JSON and is stored in the run's ``run.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from microforge.platform.errors import ConfigError
from microforge.platform.imports import import_object
from microforge.platform.precision import normalize_precision
from microforge.platform.runtime import cpus_left_for_training

from .data import TrainingData
from .workload import Cadence

__all__ = ["EarlyStopping", "MIN_WORKER_CPUS", "RUN_FORMAT", "Scaling", "TrainingJob", "plan_worker_cpus"]

RUN_FORMAT = 2
MIN_WORKER_CPUS = 0.25


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

    @classmethod
    def from_gpus(cls, workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float | None = None
                  ) -> "Scaling":
        """``gpus_per_worker`` 0 trains on CPUs."""
        return cls(num_workers=workers, use_gpu=gpus_per_worker > 0, cpus_per_worker=cpus_per_worker,
                   gpus_per_worker=gpus_per_worker or 1.0)


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the monitored metric has not improved by ``min_delta`` for ``patience`` reports."""

    patience: int = 10
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience < 1 or self.min_delta < 0:
            raise ConfigError(f"EarlyStopping needs patience >= 1 and min_delta >= 0, got {self}")


@dataclass(frozen=True)
class TrainingJob:
    """Everything the launcher needs to train one module; everything but ``data`` is JSON.

    Args:
        module: import path of the LightningModule (``"package.module:Class"``).
        module_config: keyword arguments of the module's constructor (JSON-serialisable).
        data: the datasets (see :class:`microforge.trainers.data.TrainingData`); splits
            ``"train"`` and optionally ``"val"``.
        epochs: total epochs of the run (a resumed run continues up to this number).
        max_steps: stop after this many training batches in all (None: run the epochs); with
            a cadence in steps, validation runs at the cadence too.
        runs_dir: parent directory of run directories.
        workload, options: the workload and its options that made the job (None/{} for a bare
            module); the exported artifact names the workload.
        name: run name (the run directory's name); None makes ``<workload>-<local time>``.
        scaling: workers and their resources.
        batch_size: samples per batch and worker.
        precision: Lightning precision (or a spelling :mod:`microforge.platform.precision`
            accepts); ``"auto"`` is bf16-mixed (or 16-mixed) on a GPU and 32-true on CPUs.
        optimization: ``automatic`` or ``manual`` (the module steps its own optimizers).
        gradient_clip_val: gradient-norm clipping (None: off); automatic optimisation only.
        cadence: report metrics and write a checkpoint every N epochs or steps.
        monitor, monitor_mode: the metric that ranks checkpoints (the best one is exported) and
            drives early stopping.
        early_stopping: None disables it.
        checkpoints_to_keep: best checkpoints kept (the latest is always kept as well).
        seed: seed of the module's initial weights (data randomness lives in ``data``).
        trainer_options: extra Lightning ``Trainer`` arguments (e.g. ``limit_train_batches``).
        data_workers: render/read tasks at a time per training worker for the per-epoch splits
            (``--data-workers``); None: every CPU the training workers leave, shared between them
            (see :func:`microforge.trainers.feed.default_data_workers`). It never changes the data.
    """

    module: str
    module_config: dict[str, Any]
    data: TrainingData
    epochs: int
    runs_dir: str | Path
    workload: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    scaling: Scaling = field(default_factory=Scaling)
    batch_size: int = 8
    precision: str = "auto"
    optimization: Literal["automatic", "manual"] = "automatic"
    gradient_clip_val: float | None = 1.0
    cadence: Cadence = field(default_factory=Cadence)
    monitor: str = "val_loss"
    monitor_mode: Literal["min", "max"] = "min"
    early_stopping: EarlyStopping | None = None
    checkpoints_to_keep: int = 2
    seed: int = 0
    trainer_options: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None
    data_workers: int | None = None

    def check(self) -> None:
        """Validate the fields that do not need Ray.

        Raises:
            ConfigError: naming the field to change.
        """
        for name in ("epochs", "batch_size", "checkpoints_to_keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainingJob.{name} must be an integer >= 1, got {value!r}")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            raise ConfigError(f"TrainingJob.max_steps must be an integer >= 1 or None, got {self.max_steps!r}")
        if self.data_workers is not None and (isinstance(self.data_workers, bool) or not isinstance(
                self.data_workers, int) or self.data_workers < 1):
            raise ConfigError(f"TrainingJob.data_workers must be an integer >= 1 or None, got {self.data_workers!r}")
        normalize_precision(self.precision)
        if self.monitor_mode not in ("min", "max"):
            raise ConfigError(f"TrainingJob.monitor_mode must be 'min' or 'max', got '{self.monitor_mode}'")
        if self.optimization not in ("automatic", "manual"):
            raise ConfigError(f"TrainingJob.optimization must be 'automatic' or 'manual', got '{self.optimization}'")
        if self.gradient_clip_val is not None:
            if self.optimization == "manual":
                raise ConfigError("gradient clipping is Lightning's automatic optimisation only: a manual-"
                                  "optimisation module clips its own gradients (leave gradient_clip_val unset)")
            if self.gradient_clip_val <= 0:
                raise ConfigError(f"TrainingJob.gradient_clip_val must be > 0 or None, got {self.gradient_clip_val}")
        rows = self.data.rows_per_worker("train", self.scaling.num_workers)
        if rows is not None and rows < self.batch_size:
            raise ConfigError(
                f"the training split gives each of the {self.scaling.num_workers} worker(s) {rows} samples, fewer "
                f"than one batch of {self.batch_size}: add training samples, or lower the batch size or workers"
            )
        for name in ("module_config", "trainer_options", "options"):  # stored in run.json and the artifact
            try:
                json.dumps(getattr(self, name))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"TrainingJob.{name} must be JSON-serialisable ({exc})") from None

    def record(self) -> dict[str, Any]:
        """The JSON stored in ``run.json`` (with the data's class, so a run can be rebuilt from it)."""
        data_cls = type(self.data)
        record = {
            "format": RUN_FORMAT,
            "workload": self.workload,
            "options": self.options,
            "module": self.module,
            "module_config": self.module_config,
            "data_class": f"{data_cls.__module__}:{data_cls.__qualname__}",
            "data": self.data.describe(),
            "epochs": self.epochs,
            "scaling": asdict(self.scaling),
            "batch_size": self.batch_size,
            "precision": self.precision,
            "optimization": self.optimization,
            "gradient_clip_val": self.gradient_clip_val,
            "cadence": asdict(self.cadence),
            "monitor": self.monitor,
            "monitor_mode": self.monitor_mode,
            "early_stopping": asdict(self.early_stopping) if self.early_stopping else None,
            "checkpoints_to_keep": self.checkpoints_to_keep,
            "seed": self.seed,
            "trainer_options": self.trainer_options,
            "max_steps": self.max_steps,
            "data_workers": self.data_workers,
        }
        return json.loads(json.dumps(record))  # tuples -> lists: compares equal to a stored record

    def build_module(self) -> Any:
        """The job's LightningModule (imports it; configuration errors surface here, not in a worker).

        Raises:
            ConfigError: the module rejects its config.
        """
        cls = import_object(self.module, "training module")
        try:
            return cls(**self.module_config)
        except TypeError as exc:
            raise ConfigError(f"training module '{self.module}': {exc}") from None

    @classmethod
    def from_record(cls, record: dict[str, Any], data: TrainingData, runs_dir: Path, name: str) -> "TrainingJob":
        """The job a ``run.json`` record describes (raises KeyError/TypeError when it does not)."""
        return cls(
            module=record["module"], module_config=record["module_config"], data=data, epochs=record["epochs"],
            runs_dir=runs_dir, workload=record["workload"], options=record["options"], name=name,
            scaling=Scaling(**record["scaling"]), batch_size=record["batch_size"], precision=record["precision"],
            optimization=record["optimization"], gradient_clip_val=record["gradient_clip_val"],
            cadence=Cadence(**record["cadence"]), monitor=record["monitor"], monitor_mode=record["monitor_mode"],
            early_stopping=EarlyStopping(**record["early_stopping"]) if record["early_stopping"] else None,
            checkpoints_to_keep=record["checkpoints_to_keep"], seed=record["seed"],
            trainer_options=record["trainer_options"], max_steps=record.get("max_steps"),
            data_workers=record.get("data_workers"),
        )


def plan_worker_cpus(scaling: Scaling, cluster_cpus: float) -> float:
    """CPUs each training worker reserves.

    ``scaling.cpus_per_worker`` when given; otherwise 1 CPU (Ray's default), lowered (down to
    0.25) so that the workers leave the data reserve of
    :func:`~microforge.platform.runtime.cpus_left_for_training` to the Ray Data tasks that
    produce their batches. On a 2-CPU machine 2 workers get 0.5 CPU each and synthesis keeps one
    CPU; on a cluster with spare CPUs nothing changes.
    """
    if scaling.cpus_per_worker is not None:
        return float(scaling.cpus_per_worker)
    free = cpus_left_for_training(cluster_cpus) / scaling.num_workers
    return max(MIN_WORKER_CPUS, min(1.0, math.floor(free * 100) / 100))
