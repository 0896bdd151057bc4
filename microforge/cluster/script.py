"""Render the Ray-on-Slurm job script from the template shipped with the package.

The template's logic is static; what varies per job is rendered into three blocks: the
``#SBATCH`` header (values validated by :class:`JobSpec`), shell variable assignments and the
environment activation (values passed through :func:`shlex.quote`). The command is a bash
array of quoted words, so no argument is ever re-parsed by the shell.
"""

from __future__ import annotations

import re
import shlex
from importlib import resources
from typing import Literal, Sequence

from microforge import __version__

from .spec import ClusterError, JobSpec

TEMPLATE = "ray_job.sbatch"
LOG_NAME = "slurm-%j.out"
# Seconds between the early SIGTERM (#SBATCH --signal) and the time limit; jobs shorter than
# STOP_LEAD_MIN_LIMIT get no early signal (Slurm sends it up to a minute early) and are torn
# down by the SIGTERM of the time limit itself, within Slurm's KillWait.
STOP_LEAD_S = 60
STOP_LEAD_MIN_LIMIT_S = 5 * 60

Mode = Literal["submit", "interactive"]


def sbatch_options(spec: JobSpec, job_dir: str) -> list[str]:
    """The ``#SBATCH`` options of a job, in the order they appear in the script."""
    options = [
        f"--job-name={spec.job_name}",
        f"--nodes={spec.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={spec.cpus_per_task}",
    ]
    if spec.gpus_per_node:
        if spec.gpu_request == "gres":
            options.append(f"--gres=gpu:{spec.gpus_per_node}")
        else:
            options.append(f"--gpus-per-node={spec.gpus_per_node}")
    if spec.mem is not None:
        options.append(f"--mem={spec.mem}")
    if spec.time is not None:
        options.append(f"--time={spec.time}")
    for name in ("partition", "account", "qos"):
        value = getattr(spec, name)
        if value is not None:
            options.append(f"--{name}={value}")
    options.append(f"--output={job_dir}/{LOG_NAME}")
    limit = spec.time_seconds
    if limit is None or limit >= STOP_LEAD_MIN_LIMIT_S:
        options.append(f"--signal=B:TERM@{STOP_LEAD_S}")
    return options


def _assign(name: str, value: object) -> str:
    return f"{name}={shlex.quote(str(value))}"


def settings_block(spec: JobSpec, job_dir: str, command: Sequence[str], mode: Mode) -> str:
    lines = [
        _assign("MF_MODE", "interactive" if mode == "interactive" else "batch"),
        _assign("MF_JOB_DIR", job_dir),
        _assign("MF_GPUS_PER_NODE", spec.gpus_per_node),
        _assign("MF_RAY_AUTH", spec.ray_auth),
        _assign("MF_PORT_BASE", spec.port_base),
        _assign("MF_WORKER_PORTS", spec.worker_ports or ""),
        _assign("MF_RAY_TMP_ROOT", spec.ray_tmp),
        _assign("MF_READY_TIMEOUT", spec.ready_timeout),
        _assign("MF_BIND", spec.bind),
        _assign("MF_LOGIN_HOST", spec.login_host or ""),
        "MF_COMMAND=(" + " ".join(shlex.quote(word) for word in command) + ")",
    ]
    return "\n".join(lines)


def environment_block(spec: JobSpec) -> str:
    """Module loads, verbatim setup lines, then the venv/conda activation."""
    lines = [f"module load {shlex.quote(m)} || exit 1" for m in spec.modules]
    lines += list(spec.setup)
    if spec.env_kind == "venv":
        lines.append(f"source {shlex.quote(spec.env + '/bin/activate')} || exit 1")
    elif spec.env_kind == "conda":
        lines += [
            "command -v conda >/dev/null"
            ' || { echo "conda is not on PATH (add a --module or --setup line)" >&2; exit 1; }',
            'eval "$(conda shell.bash hook)"',
            f"conda activate {shlex.quote(spec.env)} || exit 1",
        ]
    return "\n".join(lines) if lines else "# (none)"


def render_job_script(spec: JobSpec, job_dir: str, command: Sequence[str], mode: Mode = "submit") -> str:
    """The complete job script for ``command`` run on a Ray cluster of ``spec.nodes`` nodes.

    Raises:
        ClusterError: the command is empty.
    """
    if not command:
        raise ClusterError("no command given: put it after '--', e.g. -- microforge synth crystals ...")
    template = resources.files(__package__).joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    if mode == "submit":
        header = "\n".join(f"#SBATCH {option}" for option in sbatch_options(spec, job_dir))
    else:
        header = "# (interactive: the resources are those of the allocation this runs in)"
    replacements = {
        "@@MODE@@": mode,
        "@@VERSION@@": __version__,
        "@@SBATCH@@": header,
        "@@SETTINGS@@": settings_block(spec, job_dir, command, mode),
        "@@ENVIRONMENT@@": environment_block(spec),
    }
    # One pass, so text substituted for one marker is never scanned for another.
    return re.sub("@@[A-Z]+@@", lambda m: replacements[m.group(0)], template)
