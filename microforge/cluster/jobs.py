"""Job directories: the rendered script, Slurm's log and the Ray node logs of one job, plus an
index under the state dir from job id to job directory (used by ``logs`` and ``status``)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence, TextIO

from microforge.platform import atomic_write_text, ensure_writable_dir, state_dir

from . import slurm
from .script import render_job_script
from .spec import ClusterError, JobSpec, check_safe_path

log = logging.getLogger(__name__)

SCRIPT_NAME = "job.sbatch"
RECORD_NAME = "job.json"


def cluster_dir() -> Path:
    return state_dir() / "cluster"


def default_job_dir(spec: JobSpec) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return cluster_dir() / "jobs" / f"{spec.job_name}-{stamp}-{secrets.token_hex(2)}"


def resolve_job_dir(job_dir: str | Path | None, spec: JobSpec) -> Path:
    """The absolute job directory, checked to be usable on an ``#SBATCH`` line and writable.

    Raises:
        ClusterError: the path has characters Slurm cannot carry, or cannot be written.
    """
    path = Path(job_dir).expanduser().absolute() if job_dir is not None else default_job_dir(spec)
    try:
        check_safe_path(str(path), "--job-dir")
    except ValueError as exc:
        raise ClusterError(str(exc)) from None
    ensure_writable_dir(path)
    if (path / RECORD_NAME).exists():
        raise ClusterError(f"--job-dir: {path} already holds a submitted job; choose another directory")
    return path


@dataclass
class JobRecord:
    job_id: str
    job_dir: str
    script: str
    log: str
    command: list[str]
    nodes: int
    submitted_at: str


def _index_path(job_id: str) -> Path:
    return cluster_dir() / "index" / f"{slurm.check_job_id(job_id)}.json"


def find_job(job_id: str) -> JobRecord | None:
    """The record of a job submitted by microforge, or ``None``."""
    index = _index_path(job_id)
    if not index.is_file():
        return None
    job_dir = Path(json.loads(index.read_text())["job_dir"])
    record = job_dir / RECORD_NAME
    if not record.is_file():
        return None
    return JobRecord(**json.loads(record.read_text()))


def submit_job(spec: JobSpec, command: Sequence[str], job_dir: str | Path | None = None) -> JobRecord:
    """Check the request against Slurm, write the job dir and submit it with sbatch.

    Raises:
        ClusterError: sbatch is missing, the request cannot fit the partition, or sbatch
            rejected it; nothing is left in the job directory then.
    """
    slurm.require_tool("sbatch")
    slurm.check_resources(spec)
    path = resolve_job_dir(job_dir, spec)
    script_text = render_job_script(spec, str(path), command, mode="submit")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    script = path / SCRIPT_NAME
    try:
        atomic_write_text(script, script_text)
        script.chmod(0o755)
        job_id = slurm.sbatch(script)
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            script.unlink(missing_ok=True)
        raise
    record = JobRecord(
        job_id=job_id,
        job_dir=str(path),
        script=str(script),
        log=str(path / f"slurm-{job_id}.out"),
        command=list(command),
        nodes=spec.nodes,
        submitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    atomic_write_text(path / RECORD_NAME, json.dumps(asdict(record), indent=2) + "\n")
    atomic_write_text(_index_path(job_id), json.dumps({"job_dir": str(path)}) + "\n")
    log.debug("submitted job %s from %s", job_id, path)
    return record


def log_path(job_id: str) -> Path:
    """The Slurm output file of a job: from microforge's index, else from scontrol.

    Raises:
        ClusterError: neither knows the job.
    """
    record = find_job(job_id)
    if record is not None:
        return Path(record.log)
    path = slurm.stdout_path(job_id)
    if path:
        return Path(path)
    raise ClusterError(
        f"job {job_id}: no log known (not submitted by microforge here, and Slurm no longer knows the job)"
    )


def stream_log(job_id: str, follow: bool, out: TextIO | None = None, poll_s: float = 0.5) -> None:
    """Print the job's log; with ``follow``, keep printing until the job has ended."""
    out = out or sys.stdout
    path = log_path(job_id)
    position = 0
    last_check = 0.0
    finished = False
    while True:
        if path.is_file():
            with path.open("r", encoding="utf-8", errors="replace") as fh:
                fh.seek(position)
                chunk = fh.read()
                position = fh.tell()
            if chunk:
                out.write(chunk)
                out.flush()
        if not follow or finished:
            break
        if time.monotonic() - last_check > 2:
            last_check = time.monotonic()
            state = slurm.job_state(job_id)
            # One more read after the job ends picks up its last lines.
            finished = state is None or not state.active
            if finished:
                continue
        time.sleep(poll_s)
    if not path.is_file():
        if follow:
            raise ClusterError(f"job {job_id} ended without writing its log {path}")
        state = slurm.job_state(job_id)
        if state is not None and state.state == "PENDING":
            log.info("job %s is pending; its log will be %s", job_id, path)
        else:
            raise ClusterError(f"job {job_id}: log {path} does not exist")


def interactive_default_dir(job_id: str) -> Path:
    return cluster_dir() / "interactive" / job_id


def interactive_job_dir(spec: JobSpec, job_dir: str | Path | None, job_id: str) -> Path:
    path = resolve_job_dir(job_dir, spec) if job_dir is not None else interactive_default_dir(job_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def exec_interactive(spec: JobSpec, command: Sequence[str], job_dir: str | Path | None = None) -> None:
    """Replace this process with the launcher script run inside the current allocation.

    Raises:
        ClusterError: not inside a Slurm allocation, or srun/scontrol are missing.
    """
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise ClusterError(
            "not inside a Slurm allocation (SLURM_JOB_ID is unset): run it in `salloc --nodes N ...` "
            "or `srun --pty ...`, or use `microforge cluster submit` for a batch job"
        )
    slurm.check_job_id(job_id)
    for tool in ("srun", "scontrol"):
        slurm.require_tool(tool)
    path = interactive_job_dir(spec, job_dir, job_id)
    script = path / f"interactive-{job_id}.sh"
    atomic_write_text(script, render_job_script(spec, str(path), command, mode="interactive"))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("bash", ["bash", str(script)])
