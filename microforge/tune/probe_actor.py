"""Batch-size probes in fresh Ray actor processes.

Every probe runs in a new actor (``num_gpus=1`` on a GPU, a few CPUs otherwise) that is killed
afterwards, so a fragmented allocator or a CUDA error in one probe cannot affect the next, peak
RSS on CPUs is the probe's own, and a probe that hangs is killed after its timeout.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError, MicroforgeError

from .probe import ProbeResult

if TYPE_CHECKING:
    from microforge.trainers.workload import Workload

__all__ = ["ProbeSettings", "SCHEDULE_TIMEOUT_S", "WORKLOAD_CLIP", "build_probe_module", "probe_in_fresh_actor",
           "run_probe"]

# Seconds a probe actor may wait for its GPU/CPUs before the search gives up.
SCHEDULE_TIMEOUT_S = 900.0
# ProbeSettings.gradient_clip_val: clip as the workload's jobs do by default.
WORKLOAD_CLIP = "workload"


@dataclass(frozen=True)
class ProbeSettings:
    """How every probe of a search runs (sent to the probe actors).

    Args:
        workload: the workload whose probe module is trained (the object itself, so a workload
            registered only in this process probes too); its optimisation mode and clipping apply.
        precision: a Lightning precision name.
        gradient_clip_val: clipping of the probed step (:data:`WORKLOAD_CLIP`: the workload's);
            automatic optimisation only. trainer_options: the job's extra Lightning ``Trainer`` arguments.
        options: further workload options of the probed model (e.g. a small width for CPU tests).
    """

    workload: "Workload"
    resolution: int
    precision: str
    use_gpu: bool
    memory_budget_bytes: int | None
    threads: int
    warmup_steps: int
    measure_steps: int
    gradient_clip_val: float | None | str = WORKLOAD_CLIP
    trainer_options: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def clip(self) -> float | None:
        return self.workload.gradient_clip_val if self.gradient_clip_val == WORKLOAD_CLIP else self.gradient_clip_val


def build_probe_module(workload: "Workload", preset: str, resolution: int, options: dict[str, Any] | None = None):
    """The module a probe trains: the workload's probe module, or, with ``options``, the module of
    the options ``{**options, preset_option: preset, size_option: resolution}``.

    Raises:
        ConfigError: an unknown preset or option, a resolution the model cannot take, or options
            for a workload whose probe function builds its module itself.
    """
    if not options:
        return workload.probe_module(preset, resolution)
    if workload.probe is not None:
        raise ConfigError(f"workload '{workload.name}' builds its probe module itself ({workload.probe}); "
                          "it takes no further options")
    if preset not in workload.presets:
        raise ConfigError(f"workload '{workload.name}' has no preset '{preset}'{suggest(preset, workload.presets)}; "
                          f"valid: {', '.join(workload.presets)}")
    values = {**options, workload.preset_option: preset, workload.size_option: resolution}
    return workload.job(values, epochs=1, runs_dir=".").build_module()


def run_probe(settings: ProbeSettings, preset: str, batch_size: int) -> ProbeResult:
    """One probe in this process: build the workload's probe module, train a few steps, report."""
    import torch

    from .probe import measure_training_step

    torch.set_num_threads(settings.threads)
    if settings.use_gpu and settings.memory_budget_bytes:
        # A GPU budget below the card's memory: the caching allocator raises OOM above it.
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, settings.memory_budget_bytes / total))
    module = build_probe_module(settings.workload, preset, settings.resolution, settings.options)
    return measure_training_step(module, batch_size, precision=settings.precision,
                                 accelerator="gpu" if settings.use_gpu else "cpu",
                                 warmup_steps=settings.warmup_steps, measure_steps=settings.measure_steps,
                                 memory_budget_bytes=settings.memory_budget_bytes,
                                 optimization=settings.workload.optimization, gradient_clip_val=settings.clip(),
                                 trainer_options=settings.trainer_options)


@functools.lru_cache(maxsize=None)
def _probe_actor_class():
    import ray

    @ray.remote(max_restarts=0, max_task_retries=0)
    class ProbeActor:
        """One probe's process: created for one probe and killed after it."""

        def ready(self) -> bool:
            return True

        def run(self, settings: ProbeSettings, preset: str, batch_size: int) -> ProbeResult:
            return run_probe(settings, preset, batch_size)

    return ProbeActor


def probe_in_fresh_actor(settings: ProbeSettings, preset: str, batch_size: int, *, timeout_s: float,
                         cpus: float = 1.0) -> ProbeResult:
    """Run one probe in a new actor process and kill the process afterwards.

    A probe that runs longer than ``timeout_s`` (after its actor started) is killed and reported
    as ``timeout``; a process that dies (Ray's memory monitor, a segfault) is ``oom`` or ``error``.

    Raises:
        MicroforgeError: the actor could not be scheduled within :data:`SCHEDULE_TIMEOUT_S`.
    """
    import ray
    from ray.exceptions import GetTimeoutError, OutOfMemoryError, RayActorError

    actor = _probe_actor_class().options(num_cpus=cpus, num_gpus=1 if settings.use_gpu else 0).remote()
    try:
        try:
            ray.get(actor.ready.remote(), timeout=SCHEDULE_TIMEOUT_S)
        except GetTimeoutError:
            raise MicroforgeError(f"no {'GPU' if settings.use_gpu else f'{cpus} CPUs'} free for a probe actor "
                                  f"within {SCHEDULE_TIMEOUT_S:.0f} s") from None
        try:
            return ray.get(actor.run.remote(settings, preset, batch_size), timeout=timeout_s)
        except GetTimeoutError:
            return ProbeResult(batch_size, "timeout", message=f"probe killed after {timeout_s:g} s")
        except OutOfMemoryError as exc:
            return ProbeResult(batch_size, "oom", message=f"Ray's memory monitor killed the probe ({_first_line(exc)})")
        except RayActorError as exc:
            status = "oom" if "memory" in str(exc).lower() else "error"
            return ProbeResult(batch_size, status, message=f"probe process died ({_first_line(exc)})")
    finally:
        ray.kill(actor, no_restart=True)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__
