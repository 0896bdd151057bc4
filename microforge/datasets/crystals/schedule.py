"""Growth-stage schedule: lambda (log-uniform) -> t in [0, 1] -> per-image parameter ranges."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import CrystalConfig


def sample_lambda(rng: np.random.Generator, config: CrystalConfig) -> float:
    """Draw the growth stage lambda log-uniformly from ``config.stage_lambda_range``."""
    lo, hi = config.stage_lambda_range
    return float(10.0 ** rng.uniform(math.log10(lo), math.log10(hi)))


def lambda_to_t(lam: float) -> float:
    """Map lambda to t on a log scale: 0.1 -> 0, 10 -> 1, clamped to [0, 1].

    The mapping is fixed (as in the original tool), so ``stage_lambda_range`` selects a part of
    the schedule rather than stretching it.
    """
    return float(min(1.0, max(0.0, (math.log10(max(lam, 1e-12)) + 1.0) / 2.0)))


def schedule_bounds(value: Sequence[float], t: float) -> tuple[float, float]:
    """``(lo, hi)`` at stage t of a schedule ``(lo, hi)`` or ``(lo, hi@t0, hi@t1)``."""
    if len(value) == 2:
        return float(value[0]), float(value[1])
    lo, hi0, hi1 = (float(v) for v in value)
    return lo, hi0 + t * (hi1 - hi0)


@dataclass(frozen=True)
class StageParams:
    """The ranges an image at stage ``t`` samples from; every range is ``(lo, hi)`` with lo <= hi."""

    t: float
    n_rods: tuple[int, int]
    rod_len_px: tuple[float, float]
    rod_aspect: tuple[float, float]
    rod_delta: tuple[float, float]
    p_fused: float


def params_for_t(config: CrystalConfig, t: float) -> StageParams:
    """Interpolate the schedule fields of ``config`` at stage ``t`` (clamped to [0, 1])."""
    t = min(1.0, max(0.0, float(t)))
    n_lo, n_hi = schedule_bounds(config.n_rods_rng_lo_hi, t)
    return StageParams(
        t=t,
        n_rods=(int(round(n_lo)), int(round(n_hi))),
        rod_len_px=schedule_bounds(config.rod_len_px_lo_hi, t),
        rod_aspect=schedule_bounds(config.rod_aspect_lo_hi, t),
        rod_delta=schedule_bounds(config.rod_delta_rng, t),
        p_fused=config.fused_p0 + t * (config.fused_p1 - config.fused_p0) if config.fused_enable else 0.0,
    )
