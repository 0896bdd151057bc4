"""Hardware batch-size search: the largest batch that trains, and the fastest one, per model preset.

The search itself (:func:`search_batch_size`) is pure: it calls ``probe(batch_size) ->
ProbeResult`` and assumes that what fits at ``b`` fits below ``b``. It doubles the batch from 1
until a probe fails, then bisects between the last batch that fitted and the first that did not,
so a limit ``L`` costs ``2 * floor(log2(L)) + 2`` probes where the original tool's linear scan
(:func:`linear_scan`) costs ``L + 1``. Among the probes that fitted, the best batch is the one
with the most samples per second.

:class:`BatchSizeSearch` runs real probes on Ray: every probe in a fresh actor process
(``num_gpus=1`` on a GPU, a few CPUs otherwise), so a fragmented allocator or a CUDA error in one
probe cannot affect the next, and a probe that hangs is killed after ``timeout_s``. The presets
are searched concurrently, one probe at a time each, so on a cluster each preset holds its own
GPU. On CPUs the probes are measured against a memory budget (peak RSS of the probe process).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Literal

from microforge.platform.recommendations import PRECISIONS
from microforge.platform.errors import ConfigError, MicroforgeError

from .probe import ProbeResult, format_bytes
from .trainers import TunableTrainer, resolve_tunable_trainer

__all__ = [
    "BatchSearchResult",
    "BatchSizeError",
    "BatchSizeReport",
    "BatchSizeSearch",
    "PRECISIONS",
    "analytic_probe_count",
    "linear_scan",
    "normalize_precision",
    "parse_memory",
    "search_batch_size",
]

log = logging.getLogger(__name__)

# Seconds a probe actor may wait for its GPU/CPUs before the search gives up.
SCHEDULE_TIMEOUT_S = 900.0
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


class BatchSizeError(MicroforgeError):
    """Even the smallest batch does not run (too little memory, or the step fails)."""


def normalize_precision(precision: str) -> str:
    """``fp32``/``bf16-mixed``/``16-mixed`` (and spellings like ``bf16``) -> the Lightning name.

    Raises:
        ConfigError: an unknown precision.
    """
    try:
        return PRECISIONS[precision.strip().lower()]
    except KeyError:
        raise ConfigError(f"unknown precision '{precision}'; valid: fp32, bf16-mixed, 16-mixed") from None


def parse_memory(text: str | int) -> int:
    """``"4GiB"`` -> bytes. Binary (KiB, MiB, GiB, TiB) and decimal (K/KB, M/MB, G/GB, T/TB) units.

    Raises:
        ConfigError: not a positive size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(f"memory size '{text}' is not a size like 4GiB, 512MiB or 8GB")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"memory size '{text}' must be positive")
    return size


# --------------------------------------------------------------------------------------------
# The search algorithms (pure: they only call ``probe``)


@dataclass(frozen=True)
class BatchSearchResult:
    """Outcome of one search.

    Attributes:
        max_batch: the largest batch that fitted.
        best_batch: the fitted batch with the most samples/s.
        probes: every probe, in the order it ran.
        capped: the search stopped at ``max_batch`` without finding a limit.
    """

    max_batch: int
    best_batch: int
    probes: tuple[ProbeResult, ...]
    capped: bool = False

    @property
    def best(self) -> ProbeResult:
        return next(p for p in self.probes if p.batch_size == self.best_batch and p.fits)

    @property
    def largest(self) -> ProbeResult:
        return next(p for p in self.probes if p.batch_size == self.max_batch and p.fits)


class _Recorder:
    def __init__(self, probe: Callable[[int], ProbeResult]) -> None:
        self.probe = probe
        self.results: list[ProbeResult] = []

    def __call__(self, batch_size: int) -> bool:
        result = self.probe(batch_size)
        self.results.append(result)
        log.info("probe batch %d: %s%s", batch_size, result.status,
                 f" ({result.samples_per_s:.1f} samples/s, peak {format_bytes(result.peak_memory_bytes)})"
                 if result.fits else f" ({result.message})" if result.message else "")
        return result.fits

    def finish(self, max_fit: int, capped: bool) -> BatchSearchResult:
        fitted = [p for p in self.results if p.fits]
        best = max(fitted, key=lambda p: (p.samples_per_s or 0.0, p.batch_size))
        return BatchSearchResult(max_batch=max_fit, best_batch=best.batch_size, probes=tuple(self.results),
                                 capped=capped)


def _check_start(recorder: _Recorder, start: int, max_batch: int | None) -> None:
    if start < 1 or (max_batch is not None and max_batch < start):
        raise ConfigError(f"batch-size search needs 1 <= start <= max_batch, got start {start}, max {max_batch}")
    if not recorder(start):
        failed = recorder.results[-1]
        why = {"oom": "runs out of memory", "timeout": "timed out", "error": "fails"}[failed.status]
        raise BatchSizeError(f"batch size {start} {why}: {failed.message or failed.status}")


def search_batch_size(probe: Callable[[int], ProbeResult], *, max_batch: int | None = None,
                      start: int = 1) -> BatchSearchResult:
    """The largest batch for which ``probe`` fits: doubling from ``start``, then bisection.

    Args:
        probe: runs one batch size; any status but ``ok`` counts as not fitting.
        max_batch: never probe above this (None: no cap).
        start: the first batch probed; it must fit.

    Raises:
        BatchSizeError: ``start`` does not fit.
        ConfigError: ``start`` or ``max_batch`` out of range.
    """
    recorder = _Recorder(probe)
    _check_start(recorder, start, max_batch)
    low, high = start, None  # low fits; high (when known) does not
    while high is None:
        nxt = low * 2 if max_batch is None else min(low * 2, max_batch)
        if nxt == low:
            return recorder.finish(low, capped=True)
        if recorder(nxt):
            low = nxt
        else:
            high = nxt
    while high - low > 1:
        mid = (low + high) // 2
        if recorder(mid):
            low = mid
        else:
            high = mid
    return recorder.finish(low, capped=False)


def linear_scan(probe: Callable[[int], ProbeResult], *, max_batch: int | None = None, start: int = 1,
                step: int = 1) -> BatchSearchResult:
    """The original tool's search: ``start, start + step, ...`` until a probe fails (for comparison).

    Raises:
        BatchSizeError, ConfigError: as :func:`search_batch_size`.
    """
    if step < 1:
        raise ConfigError(f"linear scan step must be >= 1, got {step}")
    recorder = _Recorder(probe)
    _check_start(recorder, start, max_batch)
    batch = start
    while max_batch is None or batch + step <= max_batch:
        if not recorder(batch + step):
            return recorder.finish(batch, capped=False)
        batch += step
    return recorder.finish(batch, capped=True)


def analytic_probe_count(limit: int, method: Literal["bisection", "linear"] = "bisection") -> int:
    """Probes a search from batch 1 (no cap) makes when the largest batch that fits is ``limit``."""
    if limit < 1:
        raise ValueError("limit must be >= 1")
    return limit + 1 if method == "linear" else 2 * int(math.floor(math.log2(limit))) + 2


# --------------------------------------------------------------------------------------------
# Probes in Ray actors


@dataclass(frozen=True)
class ProbeSettings:
    """How every probe of a search runs (sent to the probe actors)."""

    trainer: TunableTrainer
    resolution: int
    precision: str
    use_gpu: bool
    memory_budget_bytes: int | None
    threads: int
    warmup_steps: int
    measure_steps: int


def _run_probe(settings: ProbeSettings, preset: str, batch_size: int) -> ProbeResult:
    """Inside the probe process: build the module, probe, report."""
    import torch

    from .probe import measure_training_step

    torch.set_num_threads(settings.threads)
    if settings.use_gpu and settings.memory_budget_bytes:
        # A GPU budget below the card's memory: the caching allocator raises OOM above it.
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, settings.memory_budget_bytes / total))
    module = settings.trainer.probe_module(preset, settings.resolution)
    return measure_training_step(module, batch_size, precision=settings.precision,
                                 accelerator="gpu" if settings.use_gpu else "cpu",
                                 warmup_steps=settings.warmup_steps, measure_steps=settings.measure_steps,
                                 memory_budget_bytes=settings.memory_budget_bytes)


@functools.lru_cache(maxsize=None)
def _probe_actor_class():
    import ray

    @ray.remote(max_restarts=0, max_task_retries=0)
    class ProbeActor:
        """One probe's process: created for one probe and killed after it."""

        def ready(self) -> bool:
            return True

        def run(self, settings: ProbeSettings, preset: str, batch_size: int) -> ProbeResult:
            return _run_probe(settings, preset, batch_size)

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


@dataclass(frozen=True)
class BatchSizeReport:
    """Outcome of a :class:`BatchSizeSearch` for every preset.

    Attributes:
        results: preset -> :class:`BatchSearchResult` (searches that succeeded).
        errors: preset -> why its search failed (e.g. batch 1 does not fit the budget).
        device: ``"cpu"`` or the GPU's name; device_memory_bytes: the GPU's memory or the CPU budget.
        seconds: wall time of the whole search.
    """

    trainer: str
    resolution: int
    precision: str
    device: str
    device_memory_bytes: int | None
    results: dict[str, BatchSearchResult]
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class BatchSizeSearch:
    """Search the largest and the fastest batch of each preset of a trainer on this Ray cluster.

    Args:
        trainer: tunable trainer name (e.g. ``"unet"``).
        presets: presets to search; resolution: input side in pixels.
        precision: ``fp32``, ``bf16-mixed`` or ``16-mixed`` (16-mixed needs a GPU).
        device: ``auto`` (a GPU when the cluster has one), ``gpu`` or ``cpu``.
        memory_budget: bytes (or a size such as ``"4GiB"``) a probe may use: required on CPUs
            (peak RSS), optional on GPUs (caps the allocator below the card's memory).
        max_batch: never probe above it (None: until memory runs out).
        timeout_s: seconds a probe may run before it is killed.
        cpus_per_probe: CPUs each probe actor reserves (its torch threads on CPU).
        parallel: presets searched at once (None: one per GPU on GPUs, 1 on CPUs so timings do
            not compete for cores).
        warmup_steps, measure_steps: steps per probe (untimed, timed).

    Raises:
        ConfigError: unknown trainer or preset, a resolution the model cannot take, a precision
            the device cannot run, or a missing CPU budget.
    """

    trainer: str
    presets: tuple[str, ...]
    resolution: int
    precision: str = "fp32"
    device: Literal["auto", "gpu", "cpu"] = "auto"
    memory_budget: int | str | None = None
    max_batch: int | None = None
    timeout_s: float = 300.0
    cpus_per_probe: float = 1.0
    parallel: int | None = None
    warmup_steps: int = 1
    measure_steps: int = 3

    def check(self) -> TunableTrainer:
        """Validate everything that does not need Ray; build each preset once (cheap, on CPU).

        Raises:
            ConfigError: see the class.
        """
        trainer = resolve_tunable_trainer(self.trainer)
        normalize_precision(self.precision)
        if not self.presets:
            raise ConfigError("name at least one preset")
        if self.resolution < 1:
            raise ConfigError(f"resolution must be >= 1 pixel, got {self.resolution}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"max batch must be >= 1, got {self.max_batch}")
        if self.timeout_s <= 0 or self.cpus_per_probe <= 0 or self.warmup_steps < 0 or self.measure_steps < 1:
            raise ConfigError("timeout and CPUs per probe must be > 0, warm-up steps >= 0, measured steps >= 1")
        if self.device not in ("auto", "gpu", "cpu"):
            raise ConfigError(f"device must be auto, gpu or cpu, got '{self.device}'")
        if self.memory_budget is not None:
            parse_memory(self.memory_budget)
        for preset in self.presets:
            trainer.probe_module(preset, self.resolution)  # unknown preset, resolution not divisible...
        return trainer

    def run(self, *, address: str | None = None,
            on_start: Callable[[str | None], None] | None = None) -> BatchSizeReport:
        """Run the search (on the running Ray, ``address``, or an embedded one).

        ``on_start`` is called with the Ray dashboard's URL (None when there is none) once Ray is up.

        Raises:
            ConfigError: see the class; MicroforgeError: probe actors cannot be scheduled.
        """
        import ray

        from microforge.platform.runtime import ray_runtime

        trainer = self.check()
        precision = normalize_precision(self.precision)
        budget = parse_memory(self.memory_budget) if self.memory_budget is not None else None
        started = time.perf_counter()
        with ray_runtime(address):
            if on_start is not None:
                from .dashboards import dashboard_url

                on_start(dashboard_url())
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            use_gpu = self.device == "gpu" or (self.device == "auto" and gpus > 0)
            if use_gpu and gpus < 1:
                raise ConfigError("--device gpu: the Ray cluster has no GPU")
            if not use_gpu:
                if budget is None:
                    raise ConfigError("on CPUs the search needs a memory budget (e.g. --memory-budget 4GiB): "
                                      "the probes measure peak RSS against it")
                if precision == "16-mixed":
                    raise ConfigError("16-mixed precision needs a GPU; on CPUs use fp32 or bf16-mixed")
                if self.cpus_per_probe > resources.get("CPU", 0):
                    raise ConfigError(f"a probe needs {self.cpus_per_probe} CPUs but the cluster has "
                                      f"{resources.get('CPU', 0):g}")
            settings = ProbeSettings(trainer=trainer, resolution=self.resolution, precision=precision,
                                     use_gpu=use_gpu, memory_budget_bytes=budget,
                                     threads=max(1, int(self.cpus_per_probe)), warmup_steps=self.warmup_steps,
                                     measure_steps=self.measure_steps)
            parallel = self.parallel or (max(1, gpus) if use_gpu else 1)
            log.info("batch-size search for %s at %d px, %s, on %s: presets %s, %d at a time",
                     trainer.name, self.resolution, precision, "GPUs" if use_gpu else f"CPU ({format_bytes(budget)})",
                     ", ".join(self.presets), parallel)
            with ThreadPoolExecutor(max_workers=min(parallel, len(self.presets))) as pool:
                futures = {preset: pool.submit(self._search_preset, settings, preset) for preset in self.presets}
                outcomes = {preset: future.result() for preset, future in futures.items()}
        results = {p: r for p, r in outcomes.items() if isinstance(r, BatchSearchResult)}
        errors = {p: r for p, r in outcomes.items() if isinstance(r, str)}
        device, memory = ("cpu", budget)
        if use_gpu:
            first = next((p for r in results.values() for p in r.probes if p.device != "cpu"), None)
            device, memory = (first.device, first.device_memory_bytes) if first else ("gpu", None)
            if budget and memory:
                memory = min(memory, budget)
        return BatchSizeReport(trainer=trainer.name, resolution=self.resolution, precision=precision, device=device,
                               device_memory_bytes=memory, results=results, errors=errors,
                               seconds=time.perf_counter() - started)

    def _search_preset(self, settings: ProbeSettings, preset: str) -> BatchSearchResult | str:
        def probe(batch_size: int) -> ProbeResult:
            return probe_in_fresh_actor(settings, preset, batch_size, timeout_s=self.timeout_s,
                                        cpus=self.cpus_per_probe)

        try:
            return search_batch_size(probe, max_batch=self.max_batch)
        except BatchSizeError as exc:
            return f"preset {preset}: {exc}"
