"""The generic Ray Train launcher: any workload's LightningModule, data from Ray Data,
checkpoints at the job's cadence, resume, and export of the best checkpoint as an artifact.

``launch(job)`` runs a :class:`~microforge.trainers.job.TrainingJob` under
``ray.train.torch.TorchTrainer``: each worker (:mod:`microforge.trainers.worker`) builds the
job's LightningModule, a Lightning ``Trainer`` from the one factory
(:mod:`microforge.trainers.trainer_factory`) with Ray's DDP strategy, and reads its data from Ray
Data (:mod:`microforge.trainers.data`). When training ends, the best checkpoint is exported
(:mod:`microforge.trainers.export`). Run directories are described in
:mod:`microforge.trainers.runs`.

Resume: launching a job under the name of an existing run (``resume=True``) lets Ray Train
restore its checkpoint index; each worker then gets the latest checkpoint from
``ray.train.get_checkpoint()`` and Lightning continues from it (epoch counter, optimizers, LR
schedules, early-stopping state). The run must train the same workload, options, module and data.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from microforge.platform.storage import ensure_writable_dir

from .job import TrainingJob, plan_worker_cpus
from .runs import RunError, TrainingResult, check_resumable, utc_now, write_run
from .worker import CHECKPOINT_FILE, PROGRESS_FILE, train_worker
from .workload import Workload

__all__ = ["ARTIFACT_DIR", "export_checkpoint", "launch"]

log = logging.getLogger(__name__)

ARTIFACT_DIR = "model"


def launch(job: TrainingJob, *, resume: bool = False, address: str | None = None, callbacks: Sequence[Any] = (),
           artifact_dir: str | Path | None = None, workload: Workload | None = None,
           start_from: Any = None) -> TrainingResult:
    """Train ``job`` on Ray and export its best checkpoint.

    Args:
        job: what to train; ``job.name`` names the run (required with ``resume``).
        resume: continue the run ``job.name`` from its latest checkpoint.
        address: Ray cluster address; None uses the running Ray or starts an embedded one.
        start_from: the directory of a checkpoint of this workload (e.g. another Tune trial's,
            which population-based training clones) that a new run starts from: weights,
            optimizer state and step count; the job's own options (e.g. mutated learning rates)
            apply. It must be readable by every worker (shared storage on a cluster).
        callbacks: Ray Train ``UserCallback``s of the run (e.g. Tune's report callback when a
            Tune trial drives the run).
        artifact_dir: where to export the artifact (default ``<run dir>/model``).
        workload: the spec of ``job.workload`` when this process may not have it registered (a
            Tune trial of a workload registered only in the driver); None looks it up.

    Raises:
        ConfigError: an invalid job (checked before anything is written).
        RunError: a new run's directory exists already; a resumed run is missing, was made by a
            different job, has no checkpoint or already has ``job.epochs`` epochs.
        ray.train.TrainingFailedError: a worker failed during training.
    """
    from microforge.platform.runtime import ray_runtime

    job.check()
    job.build_module()
    runs_dir = ensure_writable_dir(job.runs_dir)
    if resume:
        if not job.name:
            raise RunError("resume needs the name of the run to continue")
        run_dir = runs_dir / job.name
        record, done = check_resumable(job, run_dir)
        log.info("resuming %s after epoch %d of %d", run_dir, done, job.epochs)
        record.update(job.record(), status="running", updated=utc_now())
    else:
        stem = job.workload or job.module.rpartition(":")[2]
        name = job.name or f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
        job = replace(job, name=name)
        run_dir = runs_dir / name
        if run_dir.exists():
            raise RunError(f"run directory {run_dir} exists already: resume it or choose another name")
        record = {**job.record(), "name": name, "status": "running", "created": utc_now()}
    started = time.perf_counter()
    try:
        with ray_runtime(address):
            result = _fit(job, run_dir, record, callbacks, Path(artifact_dir) if artifact_dir else None, workload,
                          start_from)
    except BaseException:
        if run_dir.is_dir():  # say so in run.json; its checkpoints stay resumable
            record.update(status="failed", updated=utc_now())
            write_run(run_dir, record)
        raise
    result = replace(result, seconds=time.perf_counter() - started)
    record.update(status="finished", updated=utc_now(), epochs_completed=result.epochs_completed,
                  best_checkpoint=str(result.best_checkpoint) if result.best_checkpoint else None,
                  best_metrics=result.metrics, artifact=str(result.artifact) if result.artifact else None)
    write_run(run_dir, record)
    return result


def _fit(job: TrainingJob, run_dir: Path, record: dict[str, Any], callbacks: Sequence[Any],
         artifact_dir: Path | None, workload: Workload | None, start_from: Any = None) -> TrainingResult:
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
    write_run(run_dir, record)
    log.info("training %s on %d worker(s) with %s each; run directory %s",
             job.workload or job.module, job.scaling.num_workers, resources, run_dir)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"job": job, "run_dir": str(run_dir), "static_splits": list(datasets),
                           "torch_threads": max(1, int(cpus)), "start_from": str(start_from) if start_from else None},
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
    artifact = None
    if best_dir is not None:
        artifact = export_checkpoint(job, best_dir, artifact_dir or run_dir / ARTIFACT_DIR, best_metrics,
                                     run_dir=run_dir, workload=workload)
    return TrainingResult(run_dir=run_dir, best_checkpoint=best_dir, metrics=best_metrics, last_metrics=last,
                          epochs_completed=int(last.get("epoch", -1)) + 1, artifact=artifact, seconds=0.0)


def _best_checkpoint(result, job: TrainingJob):
    ranked = [(c, m) for c, m in (result.best_checkpoints or []) if job.monitor in m]
    if not ranked:
        return result.checkpoint
    pick = max if job.monitor_mode == "max" else min
    return pick(ranked, key=lambda cm: cm[1][job.monitor])[0]


def export_checkpoint(job: TrainingJob, checkpoint_dir: Path, directory: Path, metrics: dict[str, Any], *,
                      run_dir: Path | None = None, workload: Workload | None = None) -> Path | None:
    """Load a checkpoint of ``job`` into its module and export it to ``directory``; None when the
    module is not exportable."""
    from .lightning_import import pl
    import ray
    import torch

    from microforge import __version__

    from .export import export_artifact, is_exportable
    from .workload import get_workload

    module = job.build_module()
    if not is_exportable(module):
        log.info("%s has no export_components(); no artifact exported", job.module)
        return None
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    provenance = {
        "run": str(run_dir) if run_dir else None,
        "run_name": run_dir.name if run_dir else None,
        "checkpoint": checkpoint_dir.name,
        "epoch": metrics.get("epoch"),
        "step": metrics.get("step"),
        "workload": job.workload,
        "options": job.options,
        "training_module": job.module,
        "module_config": job.module_config,
        "data": job.data.describe(),
        "epochs": job.epochs,
        "batch_size": job.batch_size,
        "num_workers": job.scaling.num_workers,
        "seed": job.seed,
        "versions": {"microforge": __version__, "torch": torch.__version__, "ray": ray.__version__,
                     "lightning": pl.__version__},
        "created": utc_now(),
    }
    if workload is None and job.workload:
        workload = get_workload(job.workload)
    return export_artifact(module, directory, workload=workload, metrics=metrics, provenance=provenance)
