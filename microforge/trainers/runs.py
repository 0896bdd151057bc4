"""Run directories: ``run.json``, checkpoints, and the checks that let a run resume.

Run directory ``<runs_dir>/<name>/``::

    run.json                         the job (workload, options, module, data, scaling...) and its status
    checkpoint_<time>/               Ray Train checkpoints (the best and the latest are kept)
        checkpoint.ckpt              Lightning checkpoint (weights, optimizers, schedulers, loops)
        progress.json                epoch, step and metrics, readable without torch
    tensorboard/                     TensorBoard event files (rank 0)
    model/                           the exported artifact
    checkpoint_manager_snapshot.json Ray's own index, through which a relaunch resumes
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from microforge.platform.errors import ConfigError, MicroforgeError
from microforge.platform.imports import import_object
from microforge.platform.storage import atomic_write_text

from .job import RUN_FORMAT, TrainingJob
from .worker import CHECKPOINT_FILE, PROGRESS_FILE

__all__ = ["RUN_FILE", "RunError", "TrainingResult", "check_resumable", "find_run", "latest_checkpoint",
           "load_job", "read_run", "utc_now", "write_run"]

RUN_FILE = "run.json"
# The fields that define what a run trains: a resumed job must have the same.
RUN_DEFINING = ("workload", "options", "module", "module_config", "data_class", "data", "optimization")


class RunError(MicroforgeError):
    """A run directory cannot be created, resumed or read."""


@dataclass(frozen=True)
class TrainingResult:
    """Outcome of :func:`~microforge.trainers.launcher.launch`.

    Attributes:
        run_dir: the run directory.
        best_checkpoint: directory of the best checkpoint by ``job.monitor`` (None if none).
        metrics: metrics of the best checkpoint.
        last_metrics: metrics of the last report.
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


def utc_now() -> str:
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


def write_run(run_dir: Path, record: dict[str, Any]) -> None:
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
        data = import_object(record["data_class"], "data class")(**record["data"])
        job = TrainingJob.from_record(record, data, run_dir.parent, run_dir.name)
    except (KeyError, TypeError, ConfigError) as exc:
        raise RunError(f"{run_dir / RUN_FILE} cannot be turned back into a training job ({exc})") from None
    return replace(job, **overrides)


def _describe_difference(key: str, old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return ", ".join(f"{key}.{k}: run has {old.get(k)!r}, job has {new.get(k)!r}" for k in keys)
    return f"{key}: run has {old!r}, job has {new!r}"


def check_resumable(job: TrainingJob, run_dir: Path) -> tuple[dict[str, Any], int]:
    """The stored record and the epochs already done; raise unless ``job`` can continue the run.

    Raises:
        RunError: no such run, another model or data, no checkpoint yet, or no epochs left.
    """
    if not run_dir.is_dir():
        raise RunError(f"no run '{job.name}' to resume in {run_dir.parent}")
    record = read_run(run_dir)
    new = job.record()
    differing = [key for key in RUN_DEFINING if record.get(key) != new[key]]
    if differing:
        details = "; ".join(_describe_difference(key, record.get(key), new[key]) for key in differing)
        raise RunError(f"cannot resume {run_dir}: the job differs from the run's ({details})")
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise RunError(f"cannot resume {run_dir}: it has no checkpoint yet (it stopped before its first report)")
    done = int(latest[1]["epoch"]) + 1
    if job.epochs <= done:
        raise RunError(f"run {run_dir.name} has already trained {done} of {job.epochs} epochs; "
                       f"ask for more than {done} epochs to continue it")
    return record, done
