"""The one Lightning ``Trainer`` factory, used by the launcher's workers and by the batch-size probe.

A probe must measure exactly the step that training runs, so both build their ``Trainer`` here:
the same precision resolution, gradient clipping only under automatic optimisation (Lightning
refuses it for manual optimisation), and the job's extra ``trainer_options``.
"""

from __future__ import annotations

from typing import Any, Sequence

from microforge.platform.errors import ConfigError
from microforge.platform.precision import resolve_precision

__all__ = ["build_trainer", "trainer_settings"]

# Trainer arguments microforge sets itself; trainer_options may not override them.
_RESERVED = ("max_epochs", "accelerator", "devices", "strategy", "plugins", "callbacks", "logger", "precision",
             "gradient_clip_val", "enable_checkpointing")


def trainer_settings(*, precision: str, use_gpu: bool, optimization: str, gradient_clip_val: float | None,
                     trainer_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Lightning ``Trainer`` arguments a job fixes (precision resolved for the device).

    Raises:
        ConfigError: a trainer option that microforge sets itself, or an unknown precision.
    """
    options = dict(trainer_options or {})
    reserved = [key for key in options if key in _RESERVED]
    if reserved:
        raise ConfigError(f"trainer option '{reserved[0]}' is set by microforge; use the job's own field")
    return {
        "accelerator": "gpu" if use_gpu else "cpu",
        "precision": resolve_precision(precision, use_gpu),
        # Lightning raises on every batch of a manual-optimisation module when this is set.
        "gradient_clip_val": gradient_clip_val if optimization == "automatic" else None,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        **options,
    }


def build_trainer(*, precision: str, use_gpu: bool, optimization: str, gradient_clip_val: float | None,
                  trainer_options: dict[str, Any] | None = None, max_epochs: int = 1,
                  callbacks: Sequence[Any] = (), logger: Any = False, **distributed: Any):
    """A Lightning ``Trainer`` for a job's settings.

    Args:
        distributed: what differs between a run and a probe (``strategy``, ``plugins``,
            ``devices``, ``default_root_dir``, ``use_distributed_sampler``, ``limit_val_batches``...).

    Raises:
        ConfigError: see :func:`trainer_settings`.
    """
    from .lightning_import import pl

    settings = trainer_settings(precision=precision, use_gpu=use_gpu, optimization=optimization,
                                gradient_clip_val=gradient_clip_val, trainer_options=trainer_options)
    return pl.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), logger=logger, enable_checkpointing=False,
                      **{**settings, **distributed})
