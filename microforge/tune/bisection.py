"""The batch-size search algorithms, pure: they only call ``probe(batch_size) -> ProbeResult``.

:func:`search_batch_size` assumes that what fits at ``b`` fits below ``b``. It doubles the batch
from 1 until a probe fails, then bisects between the last batch that fitted and the first that
did not, so a limit ``L`` costs ``2 * floor(log2(L)) + 2`` probes where the original tool's linear
scan (:func:`linear_scan`) costs ``L + 1``. Among the probes that fitted, the best batch is the
one with the most samples per second.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Literal

from microforge.platform.errors import ConfigError, MicroforgeError

from .probe import ProbeResult, format_bytes

__all__ = ["BatchSearchResult", "BatchSizeError", "analytic_probe_count", "linear_scan", "search_batch_size"]

log = logging.getLogger(__name__)


class BatchSizeError(MicroforgeError):
    """Even the smallest batch does not run (too little memory, or the step fails)."""




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
