"""What a Ray-on-Slurm job asks for, validated before anything reaches Slurm or a shell.

Every value that ends up on an ``#SBATCH`` line is checked against the syntax Slurm accepts and
a narrow character set (so it cannot end the line or smuggle an option); every value that ends
up in the script body is shell-quoted when the script is rendered.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, ValidationError, field_validator, model_validator

from microforge.platform import ConfigModel, MicroforgeError
from microforge.platform.config import read_structured_file


class ClusterError(MicroforgeError):
    """A cluster request is invalid, Slurm rejected it, or Slurm is not usable here."""


# Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME_FORMATS = (
    (re.compile(r"^(\d+)$"), ("m",)),
    (re.compile(r"^(\d+):(\d{1,2})$"), ("m", "s")),
    (re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})$"), ("h", "m", "s")),
    (re.compile(r"^(\d+)-(\d{1,2})$"), ("d", "h")),
    (re.compile(r"^(\d+)-(\d{1,2}):(\d{1,2})$"), ("d", "h", "m")),
    (re.compile(r"^(\d+)-(\d{1,2}):(\d{1,2}):(\d{1,2})$"), ("d", "h", "m", "s")),
)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_UNLIMITED = ("UNLIMITED", "INFINITE")
_MEM = re.compile(r"^(\d+)([KMGT]?)$", re.IGNORECASE)
_MEM_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024, "": 1}
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Paths that go on #SBATCH lines: no whitespace, quotes, '%' (Slurm's filename patterns) or '$'.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+@:,=~-]*$")
_PORT_RANGE = re.compile(r"^(\d+)-(\d+)$")

# Unix socket paths are limited to 107 bytes; Ray's longest one is about 80 bytes below its
# temp dir (mfr-<job>-<node>/session_<date>_<pid>/sockets/plasma_store).
MAX_RAY_TMP_LEN = 24


def time_to_seconds(value: str) -> int | None:
    """Seconds in a Slurm time limit (``None`` for UNLIMITED/INFINITE).

    Raises:
        ValueError: not one of Slurm's formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S).
    """
    if value.upper() in _UNLIMITED:
        return None
    for pattern, units in _TIME_FORMATS:
        match = pattern.fullmatch(value)
        if match:
            return sum(int(part) * _UNIT_SECONDS[unit] for part, unit in zip(match.groups(), units))
    raise ValueError(
        f"{value!r} is not a Slurm time limit (use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
    )


def mem_to_mb(value: str) -> float:
    """Megabytes in a Slurm memory size such as ``16G`` or ``512M`` (plain numbers are MB)."""
    match = _MEM.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a Slurm memory size (use e.g. 16G, 512M or 4096)")
    return int(match.group(1)) * _MEM_MB[match.group(2).upper()]


def _check_name(value: str | None, what: str, allow_list: bool = False) -> str | None:
    if value is None:
        return None
    parts = value.split(",") if allow_list else [value]
    for part in parts:
        if not _NAME.fullmatch(part):
            raise ValueError(
                f"{value!r} is not a valid {what} name (letters, digits, '_', '.', '-'"
                + (", comma-separated" if allow_list else "")
                + ")"
            )
    return value


def check_safe_path(value: str, what: str) -> str:
    if not _SAFE_PATH.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be an absolute path of letters, digits and _./+@:,=~- "
            "(Slurm's #SBATCH lines cannot carry spaces, quotes or '%')"
        )
    return value


class JobSpec(ConfigModel):
    """Resources, environment and Ray settings of one Ray-on-Slurm job."""

    nodes: int = Field(1, ge=1, le=10000, description="Slurm nodes; one Ray node on each")
    gpus_per_node: int = Field(0, ge=0, le=64, description="GPUs per node, given to Ray as --num-gpus")
    gpu_request: Literal["gpus-per-node", "gres"] = Field(
        "gpus-per-node", description="how GPUs are requested: #SBATCH --gpus-per-node=G or --gres=gpu:G"
    )
    cpus_per_task: int = Field(1, ge=1, le=4096, description="CPUs per node (one task per node)")
    mem: str | None = Field(None, description="memory per node, e.g. 16G (default: the partition's)")
    time: str | None = Field(None, description="time limit, e.g. 2:00:00 (default: the partition's)")
    partition: str | None = Field(None, description="Slurm partition(s), comma-separated")
    account: str | None = Field(None, description="Slurm account to charge")
    qos: str | None = Field(None, description="Slurm quality of service")
    job_name: str = Field("microforge", description="Slurm job name")
    env: str | None = Field(None, description="a venv (has bin/activate) or conda env directory to activate")
    modules: list[str] = Field(default_factory=list, description="environment modules to `module load`")
    setup: list[str] = Field(
        default_factory=list, description="shell lines run before Ray starts, verbatim (e.g. `module purge`)"
    )
    ray_auth: Literal["disabled", "token"] = Field(
        "disabled", description="Ray token authentication (RAY_AUTH_MODE); token: a fresh token per job"
    )
    port_base: int = Field(20000, ge=1024, le=55000, description="start of the ports used by Ray jobs")
    worker_ports: str | None = Field(
        None, description="MIN-MAX port range for Ray workers (default: ports the kernel picks)"
    )
    ray_tmp: str = Field("/tmp", description="node-local directory for Ray's per-job temp dirs")
    ready_timeout: int = Field(300, ge=10, le=86400, description="seconds to wait for all Ray nodes")
    bind: Literal["localhost", "all"] = Field(
        "localhost", description="interfaces the dashboard (and Serve) listen on on the head node"
    )
    login_host: str | None = Field(None, description="login host for the printed ssh port forwards")

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is None:
            return None
        mem_to_mb(value)
        return value.upper()

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            seconds = time_to_seconds(value)
            if seconds == 0:
                raise ValueError("a time limit of 0 would end the job at once")
        return value

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str | None) -> str | None:
        return _check_name(value, "partition", allow_list=True)

    @field_validator("account", "qos", "job_name")
    @classmethod
    def _names(cls, value: str | None, info) -> str | None:
        return _check_name(value, info.field_name.replace("_", " "))

    @field_validator("login_host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.@-]{1,255}", value):
            raise ValueError(f"{value!r} is not a host name")
        return value

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        for module in value:
            if not re.fullmatch(r"[A-Za-z0-9_./+-]{1,200}", module):
                raise ValueError(f"{module!r} is not a module name (letters, digits and _./+-)")
        return value

    @field_validator("setup")
    @classmethod
    def _setup(cls, value: list[str]) -> list[str]:
        for line in value:
            if "\n" in line or "\r" in line or "\0" in line:
                raise ValueError(f"a setup line must be one line, got {line!r}")
        return value

    @field_validator("worker_ports")
    @classmethod
    def _worker_ports(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _PORT_RANGE.fullmatch(value)
        if not match or not 1024 <= int(match.group(1)) < int(match.group(2)) <= 65535:
            raise ValueError(f"{value!r} is not a port range MIN-MAX with 1024 <= MIN < MAX <= 65535")
        return value

    @field_validator("ray_tmp")
    @classmethod
    def _ray_tmp(cls, value: str) -> str:
        value = value.rstrip("/") or "/"
        check_safe_path(value, "Ray temp root")
        if len(value) > MAX_RAY_TMP_LEN:
            raise ValueError(
                f"Ray temp root '{value}' is longer than {MAX_RAY_TMP_LEN} characters: Ray's Unix "
                "sockets below it would exceed the 107-byte path limit (use e.g. /tmp)"
            )
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser().absolute()
        if not path.is_dir():
            raise ValueError(f"environment '{value}' does not exist (give a venv or conda env directory)")
        if not (path / "bin" / "activate").is_file() and not (path / "conda-meta").is_dir():
            raise ValueError(
                f"'{path}' is neither a venv (no bin/activate) nor a conda env (no conda-meta/)"
            )
        return str(path)

    @model_validator(mode="after")
    def _cross_fields(self) -> "JobSpec":
        if self.worker_ports is not None:
            lo, hi = (int(p) for p in self.worker_ports.split("-"))
            if lo < self.port_base + 10000 and hi >= self.port_base:
                raise ValueError(
                    f"worker ports {self.worker_ports} overlap the job port blocks "
                    f"{self.port_base}-{self.port_base + 9999}: change --worker-ports or --port-base"
                )
        return self

    @property
    def time_seconds(self) -> int | None:
        return None if self.time is None else time_to_seconds(self.time)

    @property
    def mem_mb(self) -> float | None:
        return None if self.mem is None else mem_to_mb(self.mem)

    @property
    def env_kind(self) -> Literal["venv", "conda"] | None:
        if self.env is None:
            return None
        return "conda" if (Path(self.env) / "conda-meta").is_dir() else "venv"


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def build_spec(values: Mapping[str, Any], profile: str | Path | None = None) -> JobSpec:
    """A :class:`JobSpec` from a profile file (JSON/YAML of JobSpec keys) overridden by ``values``
    (``None`` values are left to the profile or the default).

    Raises:
        ClusterError: a value is invalid; the message names the option to change.
    """
    data: dict[str, Any] = {}
    if profile is not None:
        loaded = read_structured_file(profile)
        if not isinstance(loaded, Mapping):
            raise ClusterError(f"profile {profile}: expected a mapping of option names to values")
        data.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    data.update({k: v for k, v in values.items() if v is not None})
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            loc = err["loc"]
            parts.append(f"{option_name(str(loc[0]))}: {msg}" if loc else msg)
        raise ClusterError("; ".join(parts)) from None
