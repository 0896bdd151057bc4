"""CARS tissue data: the 16-bit renderer of thyroid-like CARS images and its datasets.

``render_cars(config, seed, index)`` is pure and deterministic; ``load_preset`` gives the
shipped presets (``default``, ``dense``, ``sparse``, ``low_signal``) or reads a JSON/YAML file;
``generate_dataset`` writes the standard dataset format (``microforge synth cars``).

The names are imported on first use: the CLI imports this package to register ``synth cars``
and should not pay for numba and OpenCV then.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CarsConfig": "config", "load_preset": "config", "preset_names": "config",
    "generate_dataset": "dataset",
    "BRIGHT_FACTOR": "render", "RENDERER_VERSION": "render", "CarsSample": "render",
    "bright_fraction": "render", "render_cars": "render",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
