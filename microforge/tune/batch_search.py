"""Hardware batch-size search: the largest batch that trains, and the fastest one, per model preset
and resolution, and the preset to train at each resolution.

:class:`BatchSizeSearch` runs the doubling-then-bisection search of
:mod:`microforge.tune.bisection` for every (preset, resolution) of a workload, every probe in a
fresh Ray actor (:mod:`microforge.tune.probe_actor`; one GPU each on GPUs, a few CPUs otherwise).
The searches run concurrently, one probe at a time each, so on a cluster each holds its own GPU.
On CPUs the probes are measured against a memory budget (peak RSS of the probe process).
:meth:`BatchSizeReport.recommended` picks, per resolution, the preset whose best batch trains the
most samples/s (every batch it compares fits the memory). :func:`recommendations_from_report`
turns a report into the stored recommendations of :mod:`microforge.platform.recommendations`,
keyed by the workload's canonical name.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Literal

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError
from microforge.platform.precision import normalize_precision
from microforge.platform.recommendations import Recommendation

from .bisection import BatchSearchResult, BatchSizeError, search_batch_size
from .probe import ProbeResult, format_bytes
from .probe_actor import ProbeSettings, build_probe_module, probe_in_fresh_actor

if TYPE_CHECKING:
    from microforge.trainers.workload import Workload

__all__ = ["BatchSizeReport", "BatchSizeSearch", "parse_memory", "parse_resolutions",
           "recommendations_from_report"]

log = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


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



def parse_resolutions(value: "str | int | tuple[int, ...] | list[int]") -> tuple[int, ...]:
    """``"256,512"`` (or an int, or a sequence) -> ``(256, 512)``: positive, in order, no repeats.

    Raises:
        ConfigError: not a comma list of positive integers.
    """
    items = str(value).split(",") if isinstance(value, (str, int)) else list(value)
    sides: list[int] = []
    for item in items:
        text = str(item).strip()
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"resolution '{text}' is not a positive number of pixels (e.g. --resolution 256,512)")
        if int(text) not in sides:
            sides.append(int(text))
    if not sides:
        raise ConfigError("no resolution given (e.g. --resolution 256,512)")
    return tuple(sides)


@dataclass(frozen=True)
class BatchSizeReport:
    """Outcome of a :class:`BatchSizeSearch` for every (preset, resolution).

    Attributes:
        presets, resolutions: what was searched, in order (presets smallest first).
        results: ``(preset, resolution)`` -> :class:`BatchSearchResult` (searches that succeeded).
        errors: ``(preset, resolution)`` -> why its search failed (e.g. batch 1 does not fit).
        device: ``"cpu"`` or the GPU's name; device_memory_bytes: the GPU's memory or the CPU budget.
        seconds: wall time of the whole search.
    """

    workload: str
    presets: tuple[str, ...]
    resolutions: tuple[int, ...]
    precision: str
    device: str
    device_memory_bytes: int | None
    results: dict[tuple[str, int], BatchSearchResult]
    errors: dict[tuple[str, int], str] = field(default_factory=dict)
    seconds: float = 0.0

    def recommended(self, resolution: int) -> tuple[str, BatchSearchResult] | None:
        """The preset to train at ``resolution`` and its search: the most samples/s at its best
        batch (a tie goes to the larger preset); None when no preset fitted there."""
        fitted = [(preset, self.results[preset, resolution]) for preset in self.presets
                  if (preset, resolution) in self.results]
        if not fitted:
            return None
        order = {preset: i for i, preset in enumerate(self.presets)}
        return max(fitted, key=lambda item: (item[1].best.samples_per_s or 0.0, order[item[0]]))


@dataclass(frozen=True)
class BatchSizeSearch:
    """Search the largest and the fastest batch of each preset of a workload at each resolution on
    this Ray cluster.

    Args:
        workload: a workload name or alias (e.g. ``"delineation"``), or a :class:`Workload`.
        presets: presets to search (empty: all of the workload's).
        resolutions: input sides in pixels (an int, a sequence, or ``"256,512"``).
        precision: ``fp32``, ``bf16-mixed`` or ``16-mixed`` (16-mixed needs a GPU).
        device: ``auto`` (a GPU when the cluster has one), ``gpu`` or ``cpu``.
        memory_budget: bytes (or a size such as ``"4GiB"``) a probe may use: required on CPUs
            (peak RSS), optional on GPUs (caps the allocator below the card's memory).
        max_batch: never probe above it (None: until memory runs out).
        timeout_s: seconds a probe may run before it is killed.
        cpus_per_probe: CPUs each probe actor reserves (its torch threads on CPU).
        parallel: searches at once (None: one per GPU on GPUs, 1 on CPUs so timings do not
            compete for cores).
        warmup_steps, measure_steps: steps per probe (untimed, timed).
        trainer_options: extra Lightning ``Trainer`` arguments of the jobs the batch is for.
        options: further workload options of every probed model (e.g. ``{"width": 8}``); such a
            model is not the named preset, so the CLI does not store its results.

    Raises:
        ConfigError: unknown workload, preset or option, a resolution the model cannot take, a
            precision the device cannot run, or a missing CPU budget.
    """

    workload: "str | Workload"
    presets: tuple[str, ...]
    resolutions: "int | str | tuple[int, ...]"
    precision: str = "fp32"
    device: Literal["auto", "gpu", "cpu"] = "auto"
    memory_budget: int | str | None = None
    max_batch: int | None = None
    timeout_s: float = 300.0
    cpus_per_probe: float = 1.0
    parallel: int | None = None
    warmup_steps: int = 1
    measure_steps: int = 3
    trainer_options: dict = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> "Workload":
        from microforge.trainers.workload import Workload, get_workload

        return self.workload if isinstance(self.workload, Workload) else get_workload(self.workload)

    def preset_names(self) -> tuple[str, ...]:
        return tuple(self.presets) or self.resolve().presets

    def resolution_list(self) -> tuple[int, ...]:
        return parse_resolutions(self.resolutions)

    def check(self) -> "Workload":
        """Validate everything that does not need Ray, before any probe runs.

        The options of every (preset, resolution) are validated; the module is built (on CPU)
        only for the first, smallest, preset at each resolution, since the largest presets take
        seconds each to build and the model's own checks (e.g. a side it cannot halve) rarely
        depend on the preset.

        Raises:
            ConfigError: see the class.
        """
        workload = self.resolve()
        presets, resolutions = self.preset_names(), self.resolution_list()
        normalize_precision(self.precision, allow_auto=False)
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"max batch must be >= 1, got {self.max_batch}")
        if self.timeout_s <= 0 or self.cpus_per_probe <= 0 or self.warmup_steps < 0 or self.measure_steps < 1:
            raise ConfigError("timeout and CPUs per probe must be > 0, warm-up steps >= 0, measured steps >= 1")
        if self.device not in ("auto", "gpu", "cpu"):
            raise ConfigError(f"device must be auto, gpu or cpu, got '{self.device}'")
        if self.memory_budget is not None:
            parse_memory(self.memory_budget)
        for preset in presets:
            if preset not in workload.presets:
                raise ConfigError(f"workload '{workload.name}' has no {workload.preset_option} '{preset}'"
                                  f"{suggest(preset, workload.presets)}; valid: {', '.join(workload.presets)}")
        reserved = {workload.preset_option, workload.size_option} & set(self.options)
        if reserved:
            raise ConfigError(f"option '{reserved.pop()}' is what the search varies: give presets and resolutions")
        for resolution in resolutions:
            for preset in presets:
                workload.load_options({**self.options, workload.preset_option: preset,
                                       workload.size_option: resolution})
            build_probe_module(workload, presets[0], resolution, self.options)
        return workload

    def run(self, *, address: str | None = None,
            on_start: Callable[[str | None], None] | None = None) -> BatchSizeReport:
        """Run the search (on the running Ray, ``address``, or an embedded one).

        ``on_start`` is called with the Ray dashboard's URL (None when there is none) once Ray is up.

        Raises:
            ConfigError: see the class; MicroforgeError: probe actors cannot be scheduled.
        """
        import ray

        from microforge.platform.runtime import ray_runtime

        workload = self.check()
        presets, resolutions = self.preset_names(), self.resolution_list()
        precision = normalize_precision(self.precision, allow_auto=False)
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
            settings = ProbeSettings(workload=workload, resolution=resolutions[0], precision=precision,
                                     use_gpu=use_gpu, memory_budget_bytes=budget,
                                     threads=max(1, int(self.cpus_per_probe)), warmup_steps=self.warmup_steps,
                                     measure_steps=self.measure_steps, trainer_options=dict(self.trainer_options),
                                     options=dict(self.options))
            # The largest searches first, so the last to finish on a GPU cluster are short ones.
            tasks = [(p, r) for r in sorted(resolutions, reverse=True) for p in reversed(presets)]
            parallel = self.parallel or (max(1, gpus) if use_gpu else 1)
            log.info("batch-size search for %s at %s px, %s, on %s: %s %s, %d at a time", workload.name,
                     ", ".join(map(str, resolutions)), precision,
                     "GPUs" if use_gpu else f"CPU ({format_bytes(budget)})", workload.preset_option,
                     ", ".join(presets), parallel)
            with ThreadPoolExecutor(max_workers=min(parallel, len(tasks))) as pool:
                futures = {task: pool.submit(self._search, replace(settings, resolution=task[1]), task[0])
                           for task in tasks}
                outcomes = {task: future.result() for task, future in futures.items()}
        order = [(p, r) for r in resolutions for p in presets]
        results = {t: outcomes[t] for t in order if isinstance(outcomes[t], BatchSearchResult)}
        errors = {t: outcomes[t] for t in order if isinstance(outcomes[t], str)}
        device, memory = ("cpu", budget)
        if use_gpu:
            first = next((p for r in results.values() for p in r.probes if p.device != "cpu"), None)
            device, memory = (first.device, first.device_memory_bytes) if first else ("gpu", None)
            if budget and memory:
                memory = min(memory, budget)
        return BatchSizeReport(workload=workload.name, presets=presets, resolutions=resolutions,
                               precision=precision, device=device, device_memory_bytes=memory, results=results,
                               errors=errors, seconds=time.perf_counter() - started)

    def _search(self, settings: ProbeSettings, preset: str) -> BatchSearchResult | str:
        def probe(batch_size: int) -> ProbeResult:
            return probe_in_fresh_actor(settings, preset, batch_size, timeout_s=self.timeout_s,
                                        cpus=self.cpus_per_probe)

        try:
            return search_batch_size(probe, max_batch=self.max_batch)
        except BatchSizeError as exc:
            return f"{preset} at {settings.resolution} px: {exc}"


def recommendations_from_report(report: BatchSizeReport) -> list[Recommendation]:
    """One record per (preset, resolution) a :class:`BatchSizeReport` searched successfully (none
    without a known device memory). At each resolution the record of :meth:`BatchSizeReport.recommended`
    is marked ``recommended`` when the search compared two or more presets: a search of one preset
    says nothing about which preset to train."""
    if report.device_memory_bytes is None:
        return []
    chosen = set()
    if len(report.presets) > 1:
        chosen = {(found[0], resolution) for resolution in report.resolutions
                  if (found := report.recommended(resolution)) is not None}
    return [Recommendation(workload=report.workload, preset=preset, resolution=resolution,
                           precision=report.precision, device=report.device,
                           device_memory_bytes=int(report.device_memory_bytes), max_batch=result.max_batch,
                           best_batch=result.best_batch, samples_per_s=float(result.best.samples_per_s or 0.0),
                           step_time_s=float(result.best.step_time_s or 0.0),
                           peak_memory_bytes=result.best.peak_memory_bytes, capped=result.capped,
                           recommended=(preset, resolution) in chosen)
            for (preset, resolution), result in report.results.items()]
