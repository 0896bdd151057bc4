"""Hyperparameter search: a Ray Tune ``Tuner`` whose trials are launcher runs.

Each trial is a Tune function trainable that builds the trainer's
:class:`~microforge.trainers.launcher.TrainingJob` for its configuration and runs it with
:func:`~microforge.trainers.launcher.launch` (Ray Train V2: a trial drives its own TorchTrainer).
A Ray Train callback forwards every epoch's metrics to Tune, so the ASHA scheduler can stop
unpromising trials after any epoch (``time_attr`` is ``epochs_completed``).

Experiment directory ``<out>/<name>/``::

    search.json                the search (trainer, space, samples, epochs, scheduler, resources)
    <trial_id>/                Tune's trial directory (params.json, result.json, progress.csv, events)
        run/                   the trial's launcher run: checkpoints, tensorboard/, model/
    results.parquet            one row per trial: status, epochs, metrics, config, paths
    best_model/                the best finished trial's model artifact
    tuner.pkl, experiment_state-*.json   Tune's own state, through which ``--resume`` restores

Resume (:func:`resume_hparam_search`) restores the Tuner: finished trials stay finished,
unfinished and errored ones run again, and a trial whose run already has a checkpoint continues
from it through the launcher's resume. The experiment directory must be on storage that every
node of the cluster sees.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from microforge.platform.errors import ConfigError, MicroforgeError
from microforge.platform.storage import atomic_replace_dir, atomic_write_text, ensure_writable_dir

from .dashboards import dashboard_url
from .space import SearchSpace, load_search_space
from .trainers import JOB_HYPERPARAMETERS, TunableTrainer, resolve_tunable_trainer

if TYPE_CHECKING:
    from microforge.trainers.launcher import TrainingJob

__all__ = [
    "HparamResult",
    "HparamSearch",
    "SCHEDULERS",
    "TrialSummary",
    "build_trial_job",
    "resume_hparam_search",
    "run_hparam_search",
]

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
RESULTS_FILE = "results.parquet"
BEST_MODEL_DIR = "best_model"
TRIAL_RUN = "run"
SEARCH_FORMAT = 1
SCHEDULERS = ("asha", "none")
# A trial's own process only drives its Ray Train run; the training worker holds the real CPUs
# (Tune needs a non-empty request per trial).
TRIAL_DRIVER_CPUS = 0.01
# CPUs left to the Ray Data tasks that render training data (as the launcher does).
DATA_CPU_RESERVE = 1.0


class HparamError(MicroforgeError):
    """An experiment directory cannot be created, resumed or read."""


@dataclass(frozen=True)
class HparamSearch:
    """A hyperparameter search.

    Args:
        trainer: tunable trainer name (e.g. ``"unet"``); its metric and mode are optimised.
        space: search space mapping or YAML/JSON file (see :mod:`microforge.tune.space`).
        samples: samples drawn from the space (each grid point is sampled ``samples`` times).
        max_epochs: epochs of a trial that is never stopped early.
        scheduler: ``asha`` (stop trials behind their peers at epochs ``grace_period *
            reduction_factor**k``) or ``none`` (every trial runs ``max_epochs``).
        gpus_per_trial: GPUs of each trial's training worker (0: CPU training).
        cpus_per_trial: CPUs of each trial's training worker (None: planned from the cluster).
        max_concurrent: trials at once (None: as many as the cluster holds).
        seed: seed of the random sampling of the space.
    """

    trainer: str
    space: Mapping[str, Any] | str | Path
    samples: int = 1
    max_epochs: int = 10
    scheduler: str = "asha"
    gpus_per_trial: float = 0.0
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    grace_period: int = 1
    reduction_factor: int = 2
    seed: int = 0

    def check(self) -> tuple[TunableTrainer, SearchSpace]:
        """Validate the search without Ray: names, distributions, and every trial's module.

        Raises:
            ConfigError: naming the hyperparameter or option to change.
        """
        trainer = resolve_tunable_trainer(self.trainer)
        space = load_search_space(self.space, trainer.hyperparameters())
        for name in ("samples", "max_epochs", "grace_period", "reduction_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be an integer >= 1, got {value!r}")
        if self.reduction_factor < 2:
            raise ConfigError(f"reduction factor must be >= 2, got {self.reduction_factor}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler '{self.scheduler}'; valid: {', '.join(SCHEDULERS)}")
        if self.gpus_per_trial < 0 or (self.cpus_per_trial is not None and self.cpus_per_trial <= 0):
            raise ConfigError("GPUs per trial must be >= 0 and CPUs per trial > 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"max concurrent trials must be >= 1, got {self.max_concurrent}")
        _check_trial_configs(trainer, space, self.max_epochs)
        return trainer, space

    def record(self, space: SearchSpace) -> dict[str, Any]:
        return {"format": SEARCH_FORMAT, **{k: v for k, v in asdict(self).items() if k != "space"},
                "space": space.describe()}


@dataclass(frozen=True)
class TrialSummary:
    """One trial of a finished (or interrupted) search.

    Attributes:
        status: ``finished`` (trained to the end or to early stopping, artifact exported),
            ``stopped`` (stopped by the scheduler), ``error`` or ``pending`` (never ran).
        score: the best value of the search metric over the trial's epochs (None if none).
        metrics: metrics of the best checkpoint (finished trials) or of the last epoch.
    """

    trial_id: str
    status: str
    config: dict[str, Any]
    epochs: int
    score: float | None
    metrics: dict[str, Any]
    run_dir: Path
    artifact: Path | None
    error: str | None = None


@dataclass(frozen=True)
class HparamResult:
    """Outcome of :func:`run_hparam_search` / :func:`resume_hparam_search`.

    Attributes:
        trials: every trial, best first (by ``score``; trials without a score last).
        best: the best finished trial, whose artifact was copied to ``best_model`` (None if
            no trial finished).
    """

    experiment_dir: Path
    metric: str
    mode: str
    trials: list[TrialSummary]
    best: TrialSummary | None
    best_model: Path | None
    results_path: Path
    seconds: float
    dashboard_url: str | None = None


# --------------------------------------------------------------------------------------------
# Jobs of trials


@dataclass(frozen=True)
class _TrialSettings:
    """What every trial needs besides its configuration (sent to the trial processes)."""

    trainer: TunableTrainer
    experiment_dir: str
    max_epochs: int
    gpus_per_worker: float
    cpus_per_worker: float


def build_trial_job(trainer: TunableTrainer, params: Mapping[str, Any], *, epochs: int, runs_dir: str | Path,
                    name: str, gpus_per_worker: float = 0.0, cpus_per_worker: float | None = None) -> "TrainingJob":
    """The training job of one configuration: the trainer's job plus the job-level hyperparameters.

    Raises:
        ConfigError: a value the trainer or the job rejects.
    """
    from microforge.trainers.launcher import Scaling

    params = dict(params)
    job_fields = {key: params.pop(key) for key in JOB_HYPERPARAMETERS if key in params}
    try:
        job = trainer.job_factory()(params, epochs=epochs, runs_dir=runs_dir, name=name)
    except TypeError as exc:
        raise ConfigError(f"trainer '{trainer.name}': {exc}") from None
    scaling = Scaling(num_workers=1, use_gpu=gpus_per_worker > 0, cpus_per_worker=cpus_per_worker,
                      gpus_per_worker=gpus_per_worker or 1.0)
    return replace(job, scaling=scaling, **job_fields)


def _check_trial_configs(trainer: TunableTrainer, space: SearchSpace, epochs: int) -> None:
    """Build the job and module of the space's example configuration and of every discrete value
    and bound, so that a bad value fails here and not in a trial."""
    from microforge.trainers.registry import resolve_training_module

    base = space.example_config()
    variants = [base]
    for name, dist in space.params.items():
        variants += [{**base, name: value} for value in dist.args[1:]]
    checked: list[dict[str, Any]] = []
    for config in variants:
        if config in checked:
            continue
        checked.append(config)
        job = build_trial_job(trainer, config, epochs=epochs, runs_dir=tempfile.gettempdir(), name="check")
        job.check()
        try:
            resolve_training_module(job.module)(**job.module_config)
        except TypeError as exc:
            raise ConfigError(f"trainer '{trainer.name}': {exc}") from None


def _trial_dirname(trial) -> str:
    return trial.trial_id


def _epoch_report_callback():
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReport(TuneReportCallback):
        """Forward each epoch's metrics from Ray Train to Tune, with ``epochs_completed`` (1-based)
        for the scheduler's clock."""

        def after_report(self, run_context, metrics, checkpoint):
            metrics = [{**m, "epochs_completed": int(m.get("epoch", -1)) + 1} for m in metrics]
            super().after_report(run_context, metrics, checkpoint)

    return EpochReport()


def _run_trial(config: dict[str, Any], settings: _TrialSettings) -> None:
    """A Tune trial: one launcher run, resumed from its checkpoint when the trial runs again."""
    from ray import tune

    from microforge.trainers.launcher import latest_checkpoint, launch

    trial_id = tune.get_context().get_trial_id()
    runs_dir = Path(settings.experiment_dir) / trial_id
    job = build_trial_job(settings.trainer, config, epochs=settings.max_epochs, runs_dir=runs_dir, name=TRIAL_RUN,
                          gpus_per_worker=settings.gpus_per_worker, cpus_per_worker=settings.cpus_per_worker)
    run_dir = runs_dir / TRIAL_RUN
    resume = False
    if run_dir.exists():
        latest = latest_checkpoint(run_dir)
        if latest is None:  # interrupted during its first epoch: start again
            shutil.rmtree(run_dir)
        elif int(latest[1]["epoch"]) + 1 >= job.epochs:
            # Trained to the end but interrupted before its export: report its last epoch so the
            # trial completes; it is listed as stopped, without a model.
            tune.report({**latest[1], "epochs_completed": int(latest[1]["epoch"]) + 1})
            return
        else:
            resume = True
            log.info("trial %s continues its run after epoch %d", trial_id, int(latest[1]["epoch"]) + 1)
    launch(job, resume=resume, callbacks=[_epoch_report_callback()])


# --------------------------------------------------------------------------------------------
# Resources


def plan_trial_resources(search: HparamSearch, cluster_cpus: float, cluster_gpus: float) -> tuple[float, int]:
    """CPUs of each trial's training worker and the number of trials run at once.

    Trials share the cluster with the Ray Data tasks that render their data, so
    :data:`DATA_CPU_RESERVE` CPUs stay free for those. On GPUs the GPUs bound the concurrency.

    Raises:
        ConfigError: the cluster cannot hold one trial.
    """
    free = cluster_cpus - DATA_CPU_RESERVE
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


def _release_orphaned_placement_groups_callback():
    from ray import tune

    class ReleaseOrphanedPlacementGroups(tune.Callback):
        """Remove the placement groups of Ray Train controllers that died with their trial.

        When the scheduler stops a trial (or the search is interrupted), Tune kills the trial's
        process and with it the trial's Train controller, whose workers' placement group stays
        reserved until the driver exits. Ray Train's own cleaner finds dead controllers through the
        state API, which needs the dashboard and a single Ray instance per machine; without them
        the reserved CPUs/GPUs would starve the next trials. This callback removes, every few
        seconds, the placement groups of this job whose creating actor is dead.
        """

        interval_s = 2.0

        def __init__(self) -> None:
            self._last = 0.0

        def on_step_begin(self, iteration, trials, **info) -> None:
            if time.monotonic() - self._last >= self.interval_s:
                self._last = time.monotonic()
                release_orphaned_placement_groups()

    return ReleaseOrphanedPlacementGroups()


def release_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creator actor is dead; returns how many.

    Uses Ray's internal GCS table (the public ``placement_group_table`` omits the creator); any
    failure is logged and ignored, leaving the placement groups to Ray's own cleanup.
    """
    try:
        import ray
        from ray._private.state import state
        from ray.core.generated import gcs_pb2
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        job_id = ray.get_runtime_context().get_job_id()
        removed = 0
        for raw in state._connect_and_get_accessor().get_placement_group_table():
            data = gcs_pb2.PlacementGroupTableData.FromString(raw)
            creator = data.creator_actor_id  # empty or nil for the driver's own (Tune's trial) groups
            created_by_actor = len(creator) == ray.ActorID.size() and not ray.ActorID(creator).is_nil()
            if (data.state == gcs_pb2.PlacementGroupTableData.CREATED and created_by_actor and data.creator_actor_dead
                    and not data.is_detached and data.creator_job_id.hex() == job_id):
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(data.placement_group_id)))
                removed += 1
        if removed:
            log.info("released %d placement group(s) of stopped trials", removed)
        return removed
    except Exception as exc:  # an internal API: never let it break a search
        log.debug("cannot release orphaned placement groups: %s", exc)
        return 0


# --------------------------------------------------------------------------------------------
# Running and resuming


def run_hparam_search(search: HparamSearch, out: str | Path, *, name: str | None = None, address: str | None = None,
                      callbacks: Sequence[Any] = (), on_start: Callable[[Path, str | None], None] | None = None
                      ) -> HparamResult:
    """Run a new search into ``<out>/<name>``.

    Args:
        search: the search; checked before anything is written.
        out: parent directory of experiments; name: experiment name (default ``<trainer>-<time>``).
        address: Ray cluster; None uses the running Ray or starts an embedded one (with its dashboard).
        callbacks: extra Ray Tune callbacks (stored with the experiment, so a resume has them too).
        on_start: called with the experiment directory and the dashboard URL once Ray is up.

    Raises:
        ConfigError: an invalid search; HparamError: the experiment directory exists.
    """
    trainer, space = search.check()
    out = ensure_writable_dir(out)
    name = name or f"{trainer.name}-{datetime.now():%Y%m%d-%H%M%S}"
    experiment_dir = out / name
    if experiment_dir.exists():
        raise HparamError(f"experiment directory {experiment_dir} exists already: resume it with "
                          f"--resume {experiment_dir} or choose another name")
    return _tune(search, trainer, space, experiment_dir, restore=False, address=address, callbacks=callbacks,
                 on_start=on_start)


def resume_hparam_search(experiment_dir: str | Path, *, address: str | None = None,
                         on_start: Callable[[Path, str | None], None] | None = None) -> HparamResult:
    """Continue an interrupted search (``Tuner.restore``): unfinished and errored trials run again.

    Raises:
        HparamError: not an experiment directory of this tool.
    """
    experiment_dir = Path(experiment_dir).expanduser().absolute()
    path = experiment_dir / SEARCH_FILE
    try:
        record = json.loads(path.read_text())
        if record.get("format") != SEARCH_FORMAT:
            raise ValueError(f"format {record.get('format')!r}")
        fields_ = {k: v for k, v in record.items() if k != "format"}
        search = HparamSearch(**fields_)
    except FileNotFoundError:
        raise HparamError(f"{experiment_dir} is not a microforge tune experiment (no {SEARCH_FILE})") from None
    except (ValueError, TypeError) as exc:
        raise HparamError(f"{path} is unreadable ({exc})") from None
    trainer, space = search.check()
    return _tune(search, trainer, space, experiment_dir, restore=True, address=address, callbacks=(),
                 on_start=on_start)


def _embedded_dashboard_kwargs(address: str | None) -> dict[str, Any]:
    import ray

    if ray.is_initialized() or address or os.environ.get("RAY_ADDRESS"):
        return {}
    return {"include_dashboard": True}


def _tune(search: HparamSearch, trainer: TunableTrainer, space: SearchSpace, experiment_dir: Path, *, restore: bool,
          address: str | None, callbacks: Sequence[Any], on_start) -> HparamResult:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from microforge.platform.runtime import ray_runtime

    started = time.perf_counter()
    with ray_runtime(address, **_embedded_dashboard_kwargs(address)):
        resources = ray.cluster_resources()
        cpus, concurrent = plan_trial_resources(search, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
        settings = _TrialSettings(trainer=trainer, experiment_dir=str(experiment_dir), max_epochs=search.max_epochs,
                                  gpus_per_worker=search.gpus_per_trial, cpus_per_worker=cpus)
        trainable = tune.with_resources(tune.with_parameters(_run_trial, settings=settings),
                                        {"CPU": TRIAL_DRIVER_CPUS})
        url = dashboard_url()
        if not restore:
            experiment_dir.mkdir(parents=True)
            atomic_write_text(experiment_dir / SEARCH_FILE, json.dumps(search.record(space), indent=2) + "\n")
        log.info("%s search %s: %d trial(s) at once, each training on %g CPU%s", trainer.name, experiment_dir,
                 concurrent, cpus, f" and {search.gpus_per_trial:g} GPU" if search.gpus_per_trial else "")
        if on_start is not None:
            on_start(experiment_dir, url)
        if restore:
            if not tune.Tuner.can_restore(str(experiment_dir)):
                raise HparamError(f"{experiment_dir} has no Tune state to restore (it stopped before its first trial)")
            tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            # max_t beyond the last epoch: ASHA stops any trial that reaches max_t, which would kill
            # a trial at its last report, before its run exports the model.
            scheduler = (ASHAScheduler(time_attr="epochs_completed", max_t=search.max_epochs + 1,
                                       grace_period=search.grace_period, reduction_factor=search.reduction_factor)
                         if search.scheduler == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable,
                param_space=space.param_space(),
                tune_config=tune.TuneConfig(metric=trainer.metric, mode=trainer.mode, scheduler=scheduler,
                                            search_alg=BasicVariantGenerator(random_state=search.seed,
                                                                             max_concurrent=concurrent),
                                            num_samples=search.samples,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=experiment_dir.name, storage_path=str(experiment_dir.parent),
                                          callbacks=[_release_orphaned_placement_groups_callback(), *callbacks],
                                          verbose=1),
            )
        grid = tuner.fit()
        release_orphaned_placement_groups()
    trials = _summarise(grid, trainer, experiment_dir)
    best = next((t for t in trials if t.status == "finished" and t.artifact is not None and t.score is not None), None)
    best_model = _copy_artifact(best.artifact, experiment_dir / BEST_MODEL_DIR) if best else None
    results_path = _write_results(trials, experiment_dir / RESULTS_FILE)
    return HparamResult(experiment_dir=experiment_dir, metric=trainer.metric, mode=trainer.mode, trials=trials,
                        best=best, best_model=best_model, results_path=results_path,
                        seconds=time.perf_counter() - started, dashboard_url=url)


# --------------------------------------------------------------------------------------------
# Results


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _summarise(grid, trainer: TunableTrainer, experiment_dir: Path) -> list[TrialSummary]:
    metric, sign = trainer.metric, (1.0 if trainer.mode == "max" else -1.0)
    trials = []
    for result in grid:
        trial_id = Path(result.path).name
        run_dir = experiment_dir / trial_id / TRIAL_RUN
        record = _read_json(run_dir / "run.json")
        history = result.metrics_dataframe
        reported = [float(v) for v in history[metric].dropna()] if history is not None and metric in history else []
        last = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and k != "trial_id"}
        artifact = Path(record["artifact"]) if record.get("artifact") else None
        if result.error is not None:
            status = "error"
        elif record.get("status") == "finished":
            status = "finished"
        elif not last:
            status = "pending"
        else:
            status = "stopped"
        metrics = record.get("best_metrics") if status == "finished" else last
        score = (metrics or {}).get(metric) if status == "finished" else None
        if score is None and reported:
            score = max(reported, key=lambda v: sign * v)
        epochs = int(record.get("epochs_completed") or last.get("epochs_completed") or 0)
        trials.append(TrialSummary(
            trial_id=trial_id, status=status, config=dict(result.config or {}), epochs=epochs,
            score=float(score) if score is not None else None, metrics=dict(metrics or {}), run_dir=run_dir,
            artifact=artifact if artifact and artifact.is_dir() else None,
            error=str(result.error).strip().splitlines()[-1][:300] if result.error is not None else None))
    return sorted(trials, key=lambda t: (t.score is None, -sign * (t.score or 0.0), t.trial_id))


def _copy_artifact(source: Path, target: Path) -> Path:
    """Copy an artifact directory into place atomically."""
    return atomic_replace_dir(target, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))


def _write_results(trials: list[TrialSummary], path: Path) -> Path:
    import pandas as pd

    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial_id": t.trial_id, "status": t.status, "epochs": t.epochs, "score": t.score}
        row.update({k: v for k, v in t.metrics.items() if isinstance(v, (int, float))})
        row.update({f"config/{k}": v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                    for k, v in t.config.items()})
        row.update(run_dir=str(t.run_dir), artifact=str(t.artifact) if t.artifact else None, error=t.error)
        rows.append(row)
    tmp = path.with_name(f".{path.name}.tmp")
    pd.DataFrame(rows).to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path
