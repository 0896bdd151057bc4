"""One vocabulary of training precisions, shared by training, the batch-size search and its
stored recommendations.

Users may write ``fp32``, ``bf16``, ``fp16`` and the like; everything inside microforge uses
Lightning's names. ``auto`` means bf16-mixed (or 16-mixed) on a GPU and 32-true on CPUs.
"""

from __future__ import annotations

from .config import suggest
from .errors import ConfigError

__all__ = ["PRECISIONS", "normalize_precision", "resolve_precision"]

# Accepted spellings -> Lightning precision names.
PRECISIONS = {
    "auto": "auto",
    "fp32": "32-true", "32": "32-true", "32-true": "32-true",
    "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed",
    "fp16": "16-mixed", "16": "16-mixed", "16-mixed": "16-mixed",
    "64": "64-true", "64-true": "64-true",
}


def normalize_precision(precision: str, *, allow_auto: bool = True) -> str:
    """The Lightning name of ``precision`` (``fp32`` -> ``32-true``, ``bf16`` -> ``bf16-mixed``).

    Raises:
        ConfigError: an unknown spelling (with a did-you-mean), or ``auto`` where it is not allowed.
    """
    key = str(precision).strip().lower()
    valid = [p for p in PRECISIONS if allow_auto or p != "auto"]
    if key not in valid:
        raise ConfigError(f"unknown precision '{precision}'{suggest(key, valid)}; "
                          f"valid: {', '.join(sorted(set(PRECISIONS[p] for p in valid)))} (or fp32, bf16, fp16)")
    return PRECISIONS[key]


def resolve_precision(precision: str, use_gpu: bool) -> str:
    """The precision a run actually uses: ``auto`` resolved for the device (imports torch for GPUs).

    Raises:
        ConfigError: as :func:`normalize_precision`.
    """
    name = normalize_precision(precision)
    if name != "auto":
        return name
    if not use_gpu:
        return "32-true"
    import torch

    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
