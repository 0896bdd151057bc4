"""Schedules shared by the trainers: loss-term weights per epoch and LR warm-up + cosine.

Plain functions of the step or epoch (no state), so a resumed run gets the same values.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

__all__ = ["adamw_warmup_cosine", "linear_ramp", "loss_weights", "training_progress", "warmup_cosine_lambda"]


def training_progress(epoch: int, total_epochs: int) -> float:
    """Fraction of training done at 0-based ``epoch``: 0 at the first epoch, 1 at the last.

    Raises:
        ValueError: ``total_epochs < 1`` or ``epoch`` outside ``[0, total_epochs)``.
    """
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
    if not 0 <= epoch < total_epochs:
        raise ValueError(f"epoch must be in [0, {total_epochs}) for total_epochs={total_epochs}, got {epoch}")
    return epoch / (total_epochs - 1) if total_epochs > 1 else 0.0


def linear_ramp(progress: float, start: float, end: float, begin_value: float, end_value: float) -> float:
    """``begin_value`` before ``start``, ``end_value`` after ``end``, linear in between.

    Raises:
        ValueError: ``end < start``.
    """
    if end < start:
        raise ValueError(f"ramp end ({end}) must be >= start ({start})")
    if progress <= start:
        return begin_value
    if progress >= end:
        return end_value
    return begin_value + (end_value - begin_value) * (progress - start) / (end - start)


def loss_weights(epoch: int, total_epochs: int) -> tuple[float, float, float]:
    """Delineation loss weights ``(alpha, beta, gamma)`` for 0-based ``epoch``.

    ``alpha`` (Dice) stays 1; ``beta`` (BCE) falls linearly 1.0 -> 0.5 over the whole run;
    ``gamma`` (boundary Tversky) is 0 until 25% of the run, rises linearly to 0.5 at 75%, and
    stays there. Progress is :func:`training_progress` (the last epoch is 100%).

    Raises:
        ValueError: as :func:`training_progress`.
    """
    progress = training_progress(epoch, total_epochs)
    beta = linear_ramp(progress, 0.0, 1.0, 1.0, 0.5)
    gamma = linear_ramp(progress, 0.25, 0.75, 0.0, 0.5)
    return 1.0, beta, gamma


def warmup_cosine_lambda(warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier for ``torch.optim.lr_scheduler.LambdaLR``: linear warm-up, then cosine decay.

    Step ``s`` (0-based) gets ``(s + 1) / warmup_steps`` during warm-up (so the first step
    already learns and step ``warmup_steps - 1`` reaches 1), then
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * q)) / 2`` with
    ``q = (s - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1], so the
    multiplier is 1 right after warm-up and ``min_ratio`` from ``total_steps`` on.

    Raises:
        ValueError: ``warmup_steps < 0``, ``total_steps <= warmup_steps`` or ``min_ratio``
            outside [0, 1].
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must be greater than warmup_steps ({warmup_steps})")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    decay_steps = total_steps - warmup_steps

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        q = min(1.0, (step - warmup_steps) / decay_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * q))

    return multiplier


def adamw_warmup_cosine(parameters: Iterable[Any], total_steps: float, *, lr: float, weight_decay: float,
                        warmup_fraction: float, min_lr_ratio: float) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer: AdamW with a per-step linear warm-up and cosine
    decay over ``total_steps`` (``trainer.estimated_stepping_batches``); AdamW alone when the
    number of steps is unknown or below 2."""
    import torch

    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if not math.isfinite(total_steps) or total_steps < 2:
        return {"optimizer": optimizer}
    total = int(total_steps)
    warmup = min(round(warmup_fraction * total), total - 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_lambda(warmup, total, min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
