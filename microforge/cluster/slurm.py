"""Thin wrappers over Slurm's client commands (sbatch, squeue, scontrol, sinfo, scancel, sacct).

Slurm's own messages are passed through in :class:`ClusterError` where microforge cannot know
better; what microforge can check before submitting (partition names, node counts, time and
resource limits) it checks in :func:`check_resources`.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from microforge.platform import suggest

from .spec import ClusterError, JobSpec, time_to_seconds

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^\d+$")
# Job states in which a job holds (or waits for) resources; anything else is final.
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT"}
)


def check_job_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(str(job_id)):
        raise ClusterError(f"{job_id!r} is not a Slurm job id (digits, e.g. 1234)")
    return str(job_id)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ClusterError(
            f"'{name}' is not on PATH: microforge cluster needs Slurm's client commands "
            "(run it on a login node of the cluster, or load the Slurm module)"
        )
    return path


def run_slurm(args: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a Slurm command; with ``check``, a non-zero exit becomes a ClusterError with its stderr."""
    require_tool(args[0])
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"'{' '.join(args)}' did not answer within {timeout:.0f}s (is slurmctld up?)") from None
    if check and result.returncode != 0:
        message = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise ClusterError(f"{args[0]} failed: {message}")
    return result


def parse_key_values(line: str) -> dict[str, str]:
    """``scontrol show ... -o`` output: space-separated KEY=VALUE pairs on one line."""
    pairs = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep:
            pairs[key] = value
    return pairs


@dataclass(frozen=True)
class NodeInfo:
    name: str
    cpus: int
    memory_mb: int
    gpus: int


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    default: bool
    state: str
    total_nodes: int
    max_nodes: int | None
    max_time_s: int | None
    nodes: tuple[NodeInfo, ...]


def _gpu_count(gres: str) -> int:
    """GPUs in a node's Gres string such as ``gpu:4``, ``gpu:a100:4(S:0-1)`` or ``(null)``."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _nodes() -> dict[str, NodeInfo]:
    out = run_slurm(["scontrol", "show", "node", "-o"]).stdout
    nodes = {}
    for line in out.splitlines():
        kv = parse_key_values(line)
        if "NodeName" in kv:
            nodes[kv["NodeName"]] = NodeInfo(
                name=kv["NodeName"],
                cpus=int(kv.get("CPUTot", "0") or 0),
                memory_mb=int(kv.get("RealMemory", "0") or 0),
                gpus=_gpu_count(kv.get("Gres", "")),
            )
    return nodes


def _expand_hostlist(hostlist: str) -> list[str]:
    if not hostlist or hostlist == "(null)":
        return []
    out = run_slurm(["scontrol", "show", "hostnames", hostlist]).stdout
    return out.split()


def partitions() -> dict[str, PartitionInfo]:
    """Every partition Slurm knows, with the nodes in it."""
    out = run_slurm(["scontrol", "show", "partition", "-o"]).stdout
    all_nodes = None
    result = {}
    for line in out.splitlines():
        kv = parse_key_values(line)
        if "PartitionName" not in kv:
            continue
        if all_nodes is None:
            all_nodes = _nodes()
        names = _expand_hostlist(kv.get("Nodes", ""))
        max_time = kv.get("MaxTime", "UNLIMITED")
        max_nodes = kv.get("MaxNodes", "UNLIMITED")
        result[kv["PartitionName"]] = PartitionInfo(
            name=kv["PartitionName"],
            default=kv.get("Default") == "YES",
            state=kv.get("State", "UP"),
            total_nodes=int(kv.get("TotalNodes", len(names)) or 0),
            max_nodes=None if max_nodes in ("UNLIMITED", "") else int(max_nodes),
            max_time_s=time_to_seconds(max_time) if max_time else None,
            nodes=tuple(all_nodes[n] for n in names if n in all_nodes),
        )
    return result


def check_resources(spec: JobSpec) -> None:
    """Refuse, before submitting, what the partition can never grant.

    Raises:
        ClusterError: unknown partition, more nodes than it has, a time over its limit, or
            not enough nodes with the CPUs, memory and GPUs asked for.
    """
    known = partitions()
    if spec.partition is None:
        chosen = [p for p in known.values() if p.default]
        if not chosen:
            return  # no default partition: sbatch will say what it wants
    else:
        chosen = []
        for name in spec.partition.split(","):
            if name not in known:
                raise ClusterError(
                    f"--partition: unknown partition '{name}'{suggest(name, list(known))}; "
                    f"this cluster has: {', '.join(sorted(known)) or '(none)'}"
                )
            chosen.append(known[name])
    # With several partitions Slurm picks one that fits, so refuse only if none does.
    problems = [_misfit(spec, p) for p in chosen]
    if all(problems):
        raise ClusterError("; ".join(problems))


def _misfit(spec: JobSpec, part: PartitionInfo) -> str:
    where = f"partition '{part.name}'"
    if spec.nodes > part.total_nodes:
        return f"--nodes {spec.nodes}: {where} has only {part.total_nodes} node(s)"
    if part.max_nodes is not None and spec.nodes > part.max_nodes:
        return f"--nodes {spec.nodes}: {where} allows at most {part.max_nodes} node(s) per job"
    # No --time: the job gets the partition's default, which fits its limit.
    limit = spec.time_seconds
    if spec.time is not None and part.max_time_s is not None and (limit is None or limit > part.max_time_s):
        return f"--time {spec.time}: over the time limit of {where} ({part.max_time_s // 60} min)"
    mem = spec.mem_mb if spec.mem_mb else 0  # 0 means "all the node's memory"
    fitting = [
        n for n in part.nodes if n.cpus >= spec.cpus_per_task and n.memory_mb >= mem and n.gpus >= spec.gpus_per_node
    ]
    if part.nodes and len(fitting) < spec.nodes:
        biggest = max(part.nodes, key=lambda n: (n.gpus, n.cpus, n.memory_mb))
        return (
            f"{where} has {len(fitting)} node(s) with {spec.cpus_per_task} CPU(s)"
            + (f", {spec.mem}" if spec.mem else "")
            + (f", {spec.gpus_per_node} GPU(s)" if spec.gpus_per_node else "")
            + f" free to give, {spec.nodes} asked for (its largest node has {biggest.cpus} CPUs, "
            f"{biggest.memory_mb} MB, {biggest.gpus} GPUs)"
        )
    return ""


def sbatch(script: Path) -> str:
    """Submit ``script``; return the job id.

    Raises:
        ClusterError: sbatch is missing or rejected the job (with sbatch's own message).
    """
    result = run_slurm(["sbatch", "--parsable", str(script)], check=False)
    if result.returncode != 0:
        raise ClusterError(f"sbatch rejected the job: {(result.stderr or result.stdout).strip()}")
    job_id = result.stdout.strip().split(";")[0]
    if not JOB_ID.fullmatch(job_id):
        raise ClusterError(f"sbatch printed no job id: {result.stdout.strip()!r}")
    return job_id


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str
    source: str  # squeue, scontrol or sacct
    details: dict[str, str]

    @property
    def active(self) -> bool:
        return self.state.split()[0].rstrip("+") in ACTIVE_STATES


def job_state(job_id: str) -> JobState | None:
    """The job's state from squeue, else scontrol (recently finished jobs), else sacct
    (when accounting is on); ``None`` when no source knows the job."""
    check_job_id(job_id)
    fields = ("JobId", "State", "Elapsed", "TimeLimit", "Nodes", "NodeList", "Reason")
    out = run_slurm(["squeue", "-h", "-j", job_id, "-o", "%i|%T|%M|%l|%D|%N|%r"], check=False)
    if out.returncode == 0:
        for line in out.stdout.splitlines():
            values = dict(zip(fields, line.split("|")))
            if values.get("JobId") == job_id:
                return JobState(job_id, values["State"], "squeue", values)
    out = run_slurm(["scontrol", "show", "job", job_id, "-o"], check=False)
    if out.returncode == 0 and out.stdout.strip():
        kv = parse_key_values(out.stdout.splitlines()[0])
        if kv.get("JobId") == job_id:
            keys = ("JobState", "ExitCode", "RunTime", "TimeLimit", "NodeList", "Reason", "StdOut")
            return JobState(job_id, kv.get("JobState", "UNKNOWN"), "scontrol", {k: kv[k] for k in keys if k in kv})
    if shutil.which("sacct"):
        out = run_slurm(
            ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Elapsed,NodeList"], check=False
        )
        if out.returncode == 0:  # accounting off: sacct fails, and there is nothing more to ask
            for line in out.stdout.splitlines():
                values = dict(zip(("JobId", "State", "ExitCode", "Elapsed", "NodeList"), line.split("|")))
                if values.get("JobId") == job_id:
                    return JobState(job_id, values["State"], "sacct", values)
    return None


def cancel(job_id: str) -> None:
    check_job_id(job_id)
    result = run_slurm(["scancel", job_id], check=False)
    if result.returncode != 0:
        raise ClusterError(f"scancel {job_id} failed: {(result.stderr or result.stdout).strip()}")


def stdout_path(job_id: str) -> str | None:
    """Where Slurm writes the job's output (from scontrol), for jobs microforge did not submit."""
    out = run_slurm(["scontrol", "show", "job", check_job_id(job_id), "-o"], check=False)
    if out.returncode != 0:
        return None
    return parse_key_values(out.stdout).get("StdOut")
