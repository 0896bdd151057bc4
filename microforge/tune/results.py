"""What a hyperparameter search leaves: trial summaries, ``results.parquet`` and the best model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .trials import TRIAL_RUN

if TYPE_CHECKING:
    from microforge.trainers.workload import Workload

__all__ = ["TrialSummary", "export_best_model", "summarise_trials", "write_results"]


@dataclass(frozen=True)
class TrialSummary:
    """One trial of a finished (or interrupted) search.

    Attributes:
        status: ``finished`` (trained to the end or to early stopping, artifact exported),
            ``stopped`` (stopped by the scheduler), ``error`` or ``pending`` (never ran).
        epochs: epochs its run completed.
        score: the best value of the search metric over the trial's reports (None if none).
        metrics: metrics of the best checkpoint (finished trials) or of the last report.
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def summarise_trials(grid, workload: "Workload", experiment_dir: Path) -> list[TrialSummary]:
    """Every trial of a Tune ``ResultGrid``, best first by the workload's metric (no score last)."""
    metric, sign = workload.metric, (1.0 if workload.mode == "max" else -1.0)
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
        epochs = int(record.get("epochs_completed") or int(last.get("epoch", -1)) + 1)
        trials.append(TrialSummary(
            trial_id=trial_id, status=status, config=dict(result.config or {}), epochs=epochs,
            score=float(score) if score is not None else None, metrics=dict(metrics or {}), run_dir=run_dir,
            artifact=artifact if artifact and artifact.is_dir() else None,
            error=str(result.error).strip().splitlines()[-1][:300] if result.error is not None else None))
    return sorted(trials, key=lambda t: (t.score is None, -sign * (t.score or 0.0), t.trial_id))


def export_best_model(trial: TrialSummary, target: Path, workload: "Workload") -> Path | None:
    """Export the best checkpoint of ``trial``'s run to ``target`` (atomically replaced), as the
    run exported it; None when the run has no best checkpoint left or the module is not exportable."""
    from microforge.trainers.launcher import export_checkpoint
    from microforge.trainers.runs import load_job, read_run

    record = read_run(trial.run_dir)
    checkpoint = Path(record["best_checkpoint"]) if record.get("best_checkpoint") else None
    if checkpoint is None or not checkpoint.is_dir():
        return None
    return export_checkpoint(load_job(trial.run_dir), checkpoint, target, dict(record.get("best_metrics") or {}),
                             run_dir=trial.run_dir, workload=workload)


def write_results(trials: list[TrialSummary], path: Path) -> Path:
    """``results.parquet``: one row per trial (status, epochs, score, metrics, ``config/<name>``, paths)."""
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
