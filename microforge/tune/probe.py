"""One batch-size probe: time full training steps of a module at one batch size and measure peak memory.

A probe runs ``warmup_steps + measure_steps`` training steps on a random batch from the module's
``example_batch(batch_size)``, in a Lightning ``Trainer`` built by the one factory that training
uses (:func:`microforge.trainers.trainer_factory.build_trainer`): the same precision, the same
optimisation mode (automatic: forward, loss, backward, gradient clipping, optimizer step; manual:
the module's own step, never clipped by Lightning) and the job's trainer options.

A step is timed from Lightning's ``on_train_batch_start`` to ``on_train_batch_end``, which enclose
the whole ``training_step`` (for a manual-optimisation GAN: both forwards and backwards, both
optimizer steps and the EMA update); on a GPU the device is synchronised at both ends, so queued
kernels count in the step that launched them. Warm-up steps are run and thrown away, and a probe
in which fewer steps ran than asked is an error rather than a timing of the warm-up. Running out of memory
is an outcome, not a crash: a ``torch.cuda.OutOfMemoryError`` (or the CPU allocator's failure) is
caught, references are dropped and the CUDA cache is emptied, and the probe reports ``"oom"``.

Peak memory is what the device gives the process: on a GPU the CUDA caching allocator's peak
reserved bytes (``torch.cuda.max_memory_reserved``); on the CPU the peak resident set size of the
whole process (``getrusage(RUSAGE_SELF).ru_maxrss``), which is why every probe runs in a fresh
process (see :mod:`microforge.tune.batch_search`). A probe whose peak exceeds the memory budget
counts as out of memory.
"""

from __future__ import annotations

import gc
import logging
import resource
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = ["PROBE_STATUSES", "ProbeResult", "apply_memory_budget", "format_bytes", "is_out_of_memory",
           "measure_training_step", "peak_rss_bytes", "step_timer"]

log = logging.getLogger(__name__)

PROBE_STATUSES = ("ok", "oom", "timeout", "error")
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found.

    Attributes:
        batch_size: the probed batch size.
        status: ``ok`` (the steps ran within memory), ``oom``, ``timeout`` (killed) or ``error``.
        step_time_s: median time of the measured steps (None unless ``ok``).
        peak_memory_bytes: peak device memory (GPU) or peak RSS (CPU); None if unknown.
        message: why a probe did not fit.
        device: ``"cpu"`` or the GPU's name; device_memory_bytes: the GPU's total memory (CPU: None).
        measured_steps: steps the step time is the median of (warm-up excluded).
    """

    batch_size: int
    status: Literal["ok", "oom", "timeout", "error"]
    step_time_s: float | None = None
    peak_memory_bytes: int | None = None
    message: str = ""
    device: str = "cpu"
    device_memory_bytes: int | None = None
    measured_steps: int = 0

    @property
    def fits(self) -> bool:
        return self.status == "ok"

    @property
    def samples_per_s(self) -> float | None:
        return self.batch_size / self.step_time_s if self.fits and self.step_time_s else None


def format_bytes(n: float | None) -> str:
    """``1536 -> '1.5 KiB'``; None -> ``'-'``."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def apply_memory_budget(result: ProbeResult, budget_bytes: int | None) -> ProbeResult:
    """``result``, turned into ``oom`` when it ran but its peak memory exceeds ``budget_bytes``."""
    if budget_bytes is None or not result.fits or result.peak_memory_bytes is None:
        return result
    if result.peak_memory_bytes <= budget_bytes:
        return result
    return replace(result, status="oom", message=f"peak memory {format_bytes(result.peak_memory_bytes)} exceeds "
                                                 f"the budget of {format_bytes(budget_bytes)}")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means the device ran out of memory (CUDA OOM or an allocator failure)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or any(m in str(exc) for m in _OOM_MESSAGES))


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def step_timer(cuda: bool):
    """A Lightning callback that records ``(batch_idx, start, end)`` of every training step
    (``perf_counter`` seconds) in ``.intervals``; with ``cuda`` the device is synchronised before
    each time stamp, so asynchronous kernels are not left out of (or spill into) a step."""
    from microforge.trainers.lightning_import import pl
    import torch

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.intervals: list[tuple[int, float, float]] = []
            self._start: float | None = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if cuda:
                torch.cuda.synchronize()  # the previous step's kernels are not this step's
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if cuda:
                torch.cuda.synchronize()  # the optimizer steps and EMA may still be queued
            if self._start is not None:
                self.intervals.append((batch_idx, self._start, time.perf_counter()))
            self._start = None

        @property
        def times(self) -> list[float]:
            return [end - start for _, start, end in self.intervals]

    return StepTimer()


def measure_training_step(
    module: Any,
    batch_size: int,
    *,
    precision: str = "32-true",
    accelerator: Literal["cpu", "gpu"] = "cpu",
    warmup_steps: int = 1,
    measure_steps: int = 3,
    memory_budget_bytes: int | None = None,
    optimization: Literal["automatic", "manual"] = "automatic",
    gradient_clip_val: float | None = 1.0,
    trainer_options: dict[str, Any] | None = None,
    timer: Any = None,
) -> ProbeResult:
    """Train ``module`` for a few steps at ``batch_size`` and report time and peak memory.

    Args:
        module: a LightningModule with ``example_batch(batch_size) -> batch``.
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed``).
        accelerator: ``cpu`` or ``gpu`` (one device).
        warmup_steps: steps not timed (allocator growth, cuDNN autotuning).
        measure_steps: timed steps; the step time is their median.
        memory_budget_bytes: a peak above it makes the result ``oom``.
        optimization, gradient_clip_val, trainer_options: as the workload's training job (clipping
            applies under automatic optimisation only).
        timer: a :func:`step_timer` to record into (so a caller can inspect every step's interval).

    Returns:
        A :class:`ProbeResult`; out-of-memory and other exceptions are reported, not raised.
    """
    import torch

    from microforge.trainers.data import EpochBatches
    from microforge.trainers.trainer_factory import build_trainer

    cuda = accelerator == "gpu"
    device, total = "cpu", None
    if cuda:
        device = torch.cuda.get_device_name()
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        torch.cuda.reset_peak_memory_stats()
    timer = timer if timer is not None else step_timer(cuda)
    status, message = "ok", ""
    batch = loader = trainer = None
    steps = warmup_steps + measure_steps
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no banner per probe
    try:
        batch = module.example_batch(batch_size)
        loader = EpochBatches(lambda: iter([batch] * steps), steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on loaders, logging and SLURM does not apply here
            trainer = build_trainer(precision=precision, use_gpu=cuda, optimization=optimization,
                                    gradient_clip_val=gradient_clip_val, trainer_options=trainer_options,
                                    max_epochs=1, callbacks=[timer], logger=False, devices=1, limit_val_batches=0)
            trainer.fit(module, train_dataloaders=loader)
    except Exception as exc:  # OOM is an outcome; anything else is reported as an error, not raised
        status = "oom" if is_out_of_memory(exc) else "error"
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        log.info("batch %d: %s", batch_size, message)
    finally:
        # Drop every reference to activations and optimizer state before measuring and freeing.
        batch = loader = trainer = None
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
    peak = torch.cuda.max_memory_reserved() if cuda else peak_rss_bytes()
    if cuda:
        torch.cuda.empty_cache()
    step_time, measured = None, timer.times[warmup_steps:]
    if status == "ok":
        if len(timer.times) < steps:  # e.g. a job's max_steps cut the run short: never time a warm-up step
            status, message = "error", f"only {len(timer.times)} of {steps} training steps ran"
        else:
            step_time = statistics.median(measured)
    result = ProbeResult(batch_size=batch_size, status=status, step_time_s=step_time, peak_memory_bytes=peak,
                         message=message, device=device, device_memory_bytes=total,
                         measured_steps=len(measured) if step_time is not None else 0)
    return apply_memory_budget(result, memory_budget_bytes)
