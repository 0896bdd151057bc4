"""The trials of a hyperparameter search: their jobs, their function, their resources.

A trial's configuration holds options of the workload (:meth:`Workload.option_names`) and the
job-level hyperparameters :data:`JOB_HYPERPARAMETERS`; its job is the workload's
:meth:`~microforge.trainers.workload.Workload.job` on one worker, without early stopping (the
scheduler stops trials). Each trial runs :func:`~microforge.trainers.launcher.launch` (Ray Train
V2: a trial drives its own TorchTrainer), and Tune's report callback forwards every report of the
run to Tune, so Tune's ``training_iteration`` counts the run's reports (one per the workload's
cadence of epochs or steps): the clock of the ASHA scheduler.

Population-based training also needs each report's checkpoint in Tune (it clones a strong
trial's latest checkpoint into a weak one): then the trial drives its run in a thread and
reports every Train report with its checkpoint itself, and a trial that Tune restarts begins a
fresh run from the checkpoint Tune hands it, under its (mutated) configuration.
"""

from __future__ import annotations

import logging
import math
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from microforge.platform.errors import ConfigError
from microforge.platform.runtime import DATA_CPU_RESERVE, cpus_left_for_training

from .space import SearchSpace

if TYPE_CHECKING:
    from microforge.trainers.job import TrainingJob
    from microforge.trainers.workload import Workload

__all__ = ["JOB_HYPERPARAMETERS", "TRIAL_DRIVER_CPUS", "TRIAL_RUN", "TrialSettings", "build_trial_job",
           "check_trial_configs", "hyperparameters", "max_reports", "plan_trial_resources", "run_trial"]

log = logging.getLogger(__name__)

# TrainingJob fields any search space may set, whatever the workload.
JOB_HYPERPARAMETERS = ("batch_size", "precision", "gradient_clip_val")
TRIAL_RUN = "run"
# A trial's own process only drives its Ray Train run; the training worker holds the real CPUs
# (Tune needs a non-empty request per trial).
TRIAL_DRIVER_CPUS = 0.01


def hyperparameters(workload: "Workload") -> list[str]:
    """Every name a search space of ``workload`` may use."""
    return [*workload.option_names(), *JOB_HYPERPARAMETERS]


def build_trial_job(workload: "Workload", params: Mapping[str, Any], *, epochs: int, runs_dir: str | Path,
                    name: str, gpus_per_worker: float = 0.0, cpus_per_worker: float | None = None) -> "TrainingJob":
    """The training job of one configuration.

    Raises:
        ConfigError: a value the workload's options or the job reject.
    """
    from microforge.trainers.job import Scaling

    options = dict(params)
    job_fields = {key: options.pop(key) for key in JOB_HYPERPARAMETERS if key in options}
    return workload.job(options, epochs=epochs, runs_dir=runs_dir, name=name,
                        scaling=Scaling.from_gpus(1, gpus_per_worker, cpus_per_worker), early_stopping=None,
                        **job_fields)


def check_trial_configs(workload: "Workload", space: SearchSpace, epochs: int) -> int | None:
    """Build the job and module of the space's example configuration and of every discrete value
    and bound, so that a bad value fails here and not in a trial.

    Returns:
        The most training steps per epoch among them (None when the data does not say).

    Raises:
        ConfigError: naming the option or value.
    """
    base = space.example_config()
    variants = [base]
    for name, dist in space.params.items():
        variants += [{**base, name: value} for value in dist.args[1:]]
    checked: list[dict[str, Any]] = []
    steps: list[int | None] = []
    for config in variants:
        if config in checked:
            continue
        checked.append(config)
        job = build_trial_job(workload, config, epochs=epochs, runs_dir=tempfile.gettempdir(), name="check")
        job.check()
        job.build_module()
        rows = job.data.rows_per_worker("train", 1)
        steps.append(None if rows is None else math.ceil(rows / job.batch_size))
    return None if None in steps else max(steps)


def max_reports(workload: "Workload", epochs: int, steps_per_epoch: int | None) -> int | None:
    """The most reports a trial of ``epochs`` epochs makes (None when unknown: step cadence with
    data of unknown length). With an epoch cadence every ``every`` epochs and the last epoch
    report; with a step cadence every ``every`` steps, plus the last epoch's."""
    every = workload.cadence.every
    if workload.cadence.unit == "epochs":
        return math.ceil(epochs / every)
    if steps_per_epoch is None:
        return None
    return epochs * steps_per_epoch // every + 1


@dataclass(frozen=True)
class TrialSettings:
    """What every trial needs besides its configuration (sent to the trial processes): the
    workload object itself, so a workload registered only in the driver runs in trials too."""

    workload: "Workload"
    experiment_dir: str
    max_epochs: int
    gpus_per_worker: float
    cpus_per_worker: float
    tune_checkpoints: bool = False


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """A Tune trial: one launcher run, resumed from its checkpoint when the trial runs again."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from microforge.trainers.launcher import launch
    from microforge.trainers.runs import latest_checkpoint

    trial_id = tune.get_context().get_trial_id()
    runs_dir = Path(settings.experiment_dir) / trial_id
    job = build_trial_job(settings.workload, config, epochs=settings.max_epochs, runs_dir=runs_dir, name=TRIAL_RUN,
                          gpus_per_worker=settings.gpus_per_worker, cpus_per_worker=settings.cpus_per_worker)
    run_dir = runs_dir / TRIAL_RUN
    if settings.tune_checkpoints:
        _run_reporting_checkpoints(job, run_dir, settings)
        return
    resume = False
    if run_dir.exists():
        latest = latest_checkpoint(run_dir)
        if latest is None:  # interrupted before its first report: start again
            shutil.rmtree(run_dir)
        elif int(latest[1]["epoch"]) + 1 >= job.epochs:
            # Trained to the end but interrupted before its export: report its last metrics so the
            # trial completes; it is listed as stopped, without a model.
            tune.report(latest[1])
            return
        else:
            resume = True
            log.info("trial %s continues its run after epoch %d", trial_id, int(latest[1]["epoch"]) + 1)
    launch(job, resume=resume, callbacks=[TuneReportCallback()], workload=settings.workload)


def _forward_reports_callback(reports: Any):
    """A Ray Train callback that puts each report's metrics and checkpoint path on ``reports``."""
    from ray.train.v2.api.callback import UserCallback

    class ForwardReports(UserCallback):
        def after_report(self, run_context, metrics, checkpoint) -> None:
            reports.put((dict(metrics[0]), checkpoint.path if checkpoint else None))

    return ForwardReports()


def _run_reporting_checkpoints(job: "TrainingJob", run_dir: Path, settings: TrialSettings) -> None:
    """Run the trial's job in a thread and report each of its reports to Tune with the checkpoint.

    A restarted trial (population-based training exploiting another trial, or a resumed
    experiment) starts a fresh run from Tune's checkpoint: its weights, optimizer state and
    step count, with this trial's configuration.
    """
    from ray import tune
    from ray.train import Checkpoint
    from ray.util.queue import Queue

    from microforge.trainers.launcher import launch

    start = tune.get_checkpoint()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    reports = Queue(actor_options={"num_cpus": 0})
    failure: list[BaseException] = []

    def train() -> None:
        try:
            launch(job, callbacks=[_forward_reports_callback(reports)], workload=settings.workload,
                   start_from=start.path if start is not None else None)
        except BaseException as exc:  # re-raised in the trial's thread
            failure.append(exc)
        finally:
            reports.put(None)

    thread = threading.Thread(target=train, name="trial-run", daemon=True)
    thread.start()
    while True:
        try:
            item = reports.get(timeout=1.0)
        except queue.Empty:
            continue
        if item is None:
            break
        metrics, path = item
        tune.report(metrics, checkpoint=Checkpoint.from_directory(path) if path else None)
    thread.join()
    if failure:
        raise failure[0]


def plan_trial_resources(search: Any, cluster_cpus: float, cluster_gpus: float) -> tuple[float, int]:
    """CPUs of each trial's training worker and the number of trials run at once.

    Trials share the cluster with the Ray Data tasks that render their data, so the data reserve
    of :func:`~microforge.platform.runtime.cpus_left_for_training` stays free for those. On GPUs
    the GPUs bound the concurrency. ``search`` has ``gpus_per_trial``, ``cpus_per_trial`` and
    ``max_concurrent`` (an :class:`~microforge.tune.hparams.HparamSearch`).

    Raises:
        ConfigError: the cluster cannot hold one trial.
    """
    free = cpus_left_for_training(cluster_cpus)
    if search.gpus_per_trial > 0 and cluster_gpus < search.gpus_per_trial:
        raise ConfigError(f"a trial needs {search.gpus_per_trial:g} GPUs but the Ray cluster has {cluster_gpus:g}")
    cpus = search.cpus_per_trial
    if cpus is None:
        cpus = min(1.0, math.floor((free - TRIAL_DRIVER_CPUS) * 100) / 100)
    if cpus <= 0 or cpus + TRIAL_DRIVER_CPUS > free + 1e-9:
        raise ConfigError(f"the Ray cluster has {cluster_cpus:g} CPUs: not enough for a trial's worker "
                          f"({cpus:g} CPUs) and {DATA_CPU_RESERVE:g} CPU for its data")
    fit = int((free + 1e-9) // (cpus + TRIAL_DRIVER_CPUS))
    if search.gpus_per_trial > 0:
        fit = min(fit, int(cluster_gpus // search.gpus_per_trial))
    concurrent = max(1, fit)
    if search.max_concurrent is not None:
        concurrent = min(concurrent, search.max_concurrent)
    return cpus, concurrent


def release_orphaned_placement_groups_callback():
    """A Tune callback that calls
    :func:`~microforge.platform.runtime.release_orphaned_placement_groups` every few seconds
    (Tune kills a stopped trial's process and with it its Train controller, whose workers'
    placement group would otherwise stay reserved)."""
    from ray import tune

    from microforge.platform.runtime import release_orphaned_placement_groups

    class ReleaseOrphanedPlacementGroups(tune.Callback):
        interval_s = 2.0

        def __init__(self) -> None:
            self._last = 0.0

        def on_step_begin(self, iteration, trials, **info) -> None:
            if time.monotonic() - self._last >= self.interval_s:
                self._last = time.monotonic()
                release_orphaned_placement_groups()

    return ReleaseOrphanedPlacementGroups()
