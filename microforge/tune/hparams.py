"""Hyperparameter search: a Ray Tune ``Tuner`` whose trials are launcher runs of one workload.

Each trial (:mod:`microforge.tune.trials`) builds the workload's
:class:`~microforge.trainers.job.TrainingJob` for its configuration and runs it with
:func:`~microforge.trainers.launcher.launch`; every report of the run (one per the workload's
cadence of epochs or steps) reaches Tune, so the ASHA scheduler can stop unpromising trials after
any report. Its clock is Tune's ``training_iteration``, the number of reports, so the grace period
is in reports; ``max_t`` is one beyond a trial's last report (so ASHA never stops a trial at that
report, before its run exports the model): the exact count for an epoch cadence, an upper bound
from the largest number of steps per epoch for a step cadence (a very large bound when the data's
length is unknown).

Experiment directory ``<out>/<name>/``::

    search.json                the search (workload, space, samples, epochs, scheduler, resources)
    <trial_id>/                Tune's trial directory (params.json, result.json, progress.csv, events)
        run/                   the trial's launcher run: checkpoints, tensorboard/, model/
    results.parquet            one row per trial: status, epochs, metrics, config, paths
    best_model/                the best finished trial's best checkpoint, exported
    tuner.pkl, experiment_state-*.json   Tune's own state, through which ``--resume`` restores

Resume (:func:`resume_hparam_search`) restores the Tuner: finished trials stay finished,
unfinished and errored ones run again, and a trial whose run already has a checkpoint continues
from it through the launcher's resume. The experiment directory must be on storage that every
node of the cluster sees.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from microforge.platform.errors import ConfigError, MicroforgeError
from microforge.platform.storage import atomic_write_text, ensure_writable_dir

from .dashboards import dashboard_url
from .results import TrialSummary, export_best_model, summarise_trials, write_results
from .space import SearchSpace, load_search_space
from .trials import (TRIAL_DRIVER_CPUS, TrialSettings, check_trial_configs, hyperparameters, max_reports,
                     plan_trial_resources, release_orphaned_placement_groups_callback, run_trial)

if TYPE_CHECKING:
    from microforge.trainers.workload import Workload

__all__ = ["HparamError", "HparamResult", "HparamSearch", "SCHEDULERS", "TrialSummary", "resume_hparam_search",
           "run_hparam_search"]

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
RESULTS_FILE = "results.parquet"
BEST_MODEL_DIR = "best_model"
SEARCH_FORMAT = 1
SCHEDULERS = ("asha", "pbt", "none")
# ASHA's max_t when a trial's number of reports is unknown (step cadence, data of unknown length).
UNKNOWN_REPORTS_BOUND = 10**6


class HparamError(MicroforgeError):
    """An experiment directory cannot be created, resumed or read."""


@dataclass(frozen=True)
class HparamSearch:
    """A hyperparameter search.

    Args:
        workload: a workload name or alias (e.g. ``"delineation"``), or a
            :class:`~microforge.trainers.workload.Workload` (one registered only in this process
            works too); its metric and mode are optimised.
        space: search space mapping or YAML/JSON file (see :mod:`microforge.tune.space`); its
            names are the workload's options and ``batch_size``, ``precision``,
            ``gradient_clip_val``. None: the workload's default space.
        samples: samples drawn from the space (each grid point is sampled ``samples`` times).
        max_epochs: epochs of a trial that is never stopped early.
        scheduler: ``asha`` (stop trials behind their peers at reports ``grace_period *
            reduction_factor**k``), ``pbt`` (population-based training: every
            ``perturbation_interval`` reports a trial in the bottom quarter continues from a top
            trial's checkpoint with the space's values perturbed or resampled, as Ray's PBT DCGAN
            example does; every report carries a checkpoint, so the checkpoint interval equals the
            perturbation interval) or ``none`` (every trial runs ``max_epochs``).
        grace_period: ASHA: reports before a trial can be stopped (a report per the workload's
            cadence: every N epochs or steps). reduction_factor: ASHA: keep 1/factor per rung.
        gpus_per_trial: GPUs of each trial's training worker (0: CPU training).
        cpus_per_trial: CPUs of each trial's training worker (None: planned from the cluster).
        max_concurrent: trials at once (None: as many as the cluster holds).
        seed: seed of the random sampling of the space.
        perturbation_interval: PBT: reports between perturbations.
    """

    workload: "str | Workload"
    space: Mapping[str, Any] | str | Path | None = None
    samples: int = 1
    max_epochs: int = 10
    scheduler: str = "asha"
    gpus_per_trial: float = 0.0
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    grace_period: int = 1
    reduction_factor: int = 2
    seed: int = 0
    perturbation_interval: int = 2

    def resolve(self) -> "Workload":
        from microforge.trainers.workload import Workload, get_workload

        return self.workload if isinstance(self.workload, Workload) else get_workload(self.workload)

    def check(self) -> tuple["Workload", SearchSpace, int | None]:
        """Validate the search without Ray: names, distributions, and every trial's job and module.

        Returns:
            The workload, the space and the most training steps per epoch of a trial (if known).

        Raises:
            ConfigError: naming the hyperparameter or option to change.
        """
        workload = self.resolve()
        source = self.space if self.space is not None else workload.default_space()
        if source is None:
            raise ConfigError(f"workload '{workload.name}' has no default search space: pass --space SPACE.yaml")
        space = load_search_space(source, hyperparameters(workload))
        for name in ("samples", "max_epochs", "grace_period", "reduction_factor", "perturbation_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be an integer >= 1, got {value!r}")
        if self.reduction_factor < 2:
            raise ConfigError(f"reduction factor must be >= 2, got {self.reduction_factor}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler '{self.scheduler}'; valid: {', '.join(SCHEDULERS)}")
        if self.scheduler == "pbt" and all(d.kind == "grid" for d in space.params.values()):
            raise ConfigError("pbt perturbs the space's sampled values: give at least one distribution "
                              "(e.g. lr: {loguniform: [1e-5, 1e-3]}) that is not a grid")
        if self.gpus_per_trial < 0 or (self.cpus_per_trial is not None and self.cpus_per_trial <= 0):
            raise ConfigError("GPUs per trial must be >= 0 and CPUs per trial > 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"max concurrent trials must be >= 1, got {self.max_concurrent}")
        steps_per_epoch = check_trial_configs(workload, space, self.max_epochs)
        return workload, space, steps_per_epoch

    def record(self, workload: "Workload", space: SearchSpace) -> dict[str, Any]:
        fields_ = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {"format": SEARCH_FORMAT, **fields_, "workload": workload.name, "space": space.describe()}


@dataclass(frozen=True)
class HparamResult:
    """Outcome of :func:`run_hparam_search` / :func:`resume_hparam_search`.

    Attributes:
        trials: every trial, best first (by ``score``; trials without a score last).
        best: the best finished trial, whose best checkpoint was exported to ``best_model``
            (None if no trial finished).
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
# Running and resuming


def run_hparam_search(search: HparamSearch, out: str | Path, *, name: str | None = None, address: str | None = None,
                      callbacks: Sequence[Any] = (), on_start: Callable[[Path, str | None], None] | None = None
                      ) -> HparamResult:
    """Run a new search into ``<out>/<name>``.

    Args:
        search: the search; checked before anything is written.
        out: parent directory of experiments; name: experiment name (default ``<workload>-<time>``).
        address: Ray cluster; None uses the running Ray or starts an embedded one (with its dashboard).
        callbacks: extra Ray Tune callbacks (stored with the experiment, so a resume has them too).
        on_start: called with the experiment directory and the dashboard URL once Ray is up.

    Raises:
        ConfigError: an invalid search; HparamError: the experiment directory exists.
    """
    workload, space, steps_per_epoch = search.check()
    out = ensure_writable_dir(out)
    name = name or f"{workload.name}-{datetime.now():%Y%m%d-%H%M%S}"
    experiment_dir = out / name
    if experiment_dir.exists():
        raise HparamError(f"experiment directory {experiment_dir} exists already: resume it with "
                          f"--resume {experiment_dir} or choose another name")
    return _tune(search, workload, space, steps_per_epoch, experiment_dir, restore=False, address=address,
                 callbacks=callbacks, on_start=on_start)


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
        if "trainer" in fields_:  # written before workloads
            fields_.setdefault("workload", fields_.pop("trainer"))
        search = HparamSearch(**fields_)
    except FileNotFoundError:
        raise HparamError(f"{experiment_dir} is not a microforge tune experiment (no {SEARCH_FILE})") from None
    except (ValueError, TypeError) as exc:
        raise HparamError(f"{path} is unreadable ({exc})") from None
    workload, space, steps_per_epoch = search.check()
    return _tune(search, workload, space, steps_per_epoch, experiment_dir, restore=True, address=address,
                 callbacks=(), on_start=on_start)


def _embedded_dashboard_kwargs(address: str | None) -> dict[str, Any]:
    import ray

    if ray.is_initialized() or address or os.environ.get("RAY_ADDRESS"):
        return {}
    return {"include_dashboard": True}


def _tune(search: HparamSearch, workload: "Workload", space: SearchSpace, steps_per_epoch: int | None,
          experiment_dir: Path, *, restore: bool, address: str | None, callbacks: Sequence[Any], on_start
          ) -> HparamResult:
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from microforge.platform.runtime import ray_runtime, release_orphaned_placement_groups

    started = time.perf_counter()
    with ray_runtime(address, **_embedded_dashboard_kwargs(address)):
        resources = ray.cluster_resources()
        cpus, concurrent = plan_trial_resources(search, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
        settings = TrialSettings(workload=workload, experiment_dir=str(experiment_dir), max_epochs=search.max_epochs,
                                 gpus_per_worker=search.gpus_per_trial, cpus_per_worker=cpus,
                                 tune_checkpoints=search.scheduler == "pbt")
        trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                                        {"CPU": TRIAL_DRIVER_CPUS})
        url = dashboard_url()
        if not restore:
            experiment_dir.mkdir(parents=True)
            atomic_write_text(experiment_dir / SEARCH_FILE, json.dumps(search.record(workload, space), indent=2) + "\n")
        log.info("%s search %s: %d trial(s) at once, each training on %g CPU%s", workload.name, experiment_dir,
                 concurrent, cpus, f" and {search.gpus_per_trial:g} GPU" if search.gpus_per_trial else "")
        if on_start is not None:
            on_start(experiment_dir, url)
        if restore:
            if not tune.Tuner.can_restore(str(experiment_dir)):
                raise HparamError(f"{experiment_dir} has no Tune state to restore (it stopped before its first trial)")
            tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            # The clock is the number of reports; max_t one beyond the last report: ASHA stops any
            # trial that reaches max_t, which would kill a trial at its last report, before its
            # run exports the model.
            reports = max_reports(workload, search.max_epochs, steps_per_epoch) or UNKNOWN_REPORTS_BOUND
            scheduler = _scheduler(search, space, reports)
            tuner = tune.Tuner(
                trainable,
                param_space=space.param_space(),
                tune_config=tune.TuneConfig(metric=workload.metric, mode=workload.mode, scheduler=scheduler,
                                            search_alg=BasicVariantGenerator(random_state=search.seed,
                                                                             max_concurrent=concurrent),
                                            num_samples=search.samples,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=experiment_dir.name, storage_path=str(experiment_dir.parent),
                                          callbacks=[release_orphaned_placement_groups_callback(), *callbacks],
                                          verbose=1),
            )
        grid = tuner.fit()
        release_orphaned_placement_groups()
    trials = summarise_trials(grid, workload, experiment_dir)
    best = next((t for t in trials if t.status == "finished" and t.artifact is not None and t.score is not None), None)
    best_model = export_best_model(best, experiment_dir / BEST_MODEL_DIR, workload) if best else None
    results_path = write_results(trials, experiment_dir / RESULTS_FILE)
    return HparamResult(experiment_dir=experiment_dir, metric=workload.metric, mode=workload.mode, trials=trials,
                        best=best, best_model=best_model, results_path=results_path,
                        seconds=time.perf_counter() - started, dashboard_url=url)


def _scheduler(search: HparamSearch, space: SearchSpace, reports: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if search.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=reports + 1, grace_period=search.grace_period,
                             reduction_factor=search.reduction_factor)
    if search.scheduler == "pbt":
        mutations = {name: dist.to_tune() for name, dist in space.params.items() if dist.kind != "grid"}
        return PopulationBasedTraining(time_attr="training_iteration",
                                       perturbation_interval=search.perturbation_interval,
                                       hyperparam_mutations=mutations, quantile_fraction=0.25,
                                       resample_probability=0.25)
    return FIFOScheduler()


def _trial_dirname(trial) -> str:
    return trial.trial_id
