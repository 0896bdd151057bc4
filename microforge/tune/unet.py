"""The delineation U-Net as seen by the searches (see :class:`~microforge.tune.trainers.TunableTrainer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["unet_probe_module", "unet_tuning_job"]

_DATA_DEFAULTS = {"train_samples": 256, "val_samples": 64, "seed": 0}


def unet_tuning_job(params: dict[str, Any], *, epochs: int, runs_dir: str | Path, name: str):
    """A trial's job: :func:`~microforge.trainers.unet.lightning.unet_job` with ``params``.

    ``preset`` and ``image_size`` pick the network and the size of the rendered blobs;
    ``train_samples``, ``val_samples`` and ``seed`` the data; the other names are
    :class:`~microforge.trainers.unet.lightning.UNetModule` arguments. Early stopping is left to
    the search's scheduler.
    """
    from microforge.trainers.unet.lightning import unet_job

    module_options = dict(params)
    preset = module_options.pop("preset", "tiny")
    size = module_options.pop("image_size", None)
    data = {key: module_options.pop(key, default) for key, default in _DATA_DEFAULTS.items()}
    return unet_job(epochs=epochs, runs_dir=runs_dir, name=name, preset=preset, size=size, early_stopping=None,
                    module_options=module_options, **data)


def unet_probe_module(preset: str, resolution: int):
    """A :class:`~microforge.trainers.unet.lightning.UNetModule` for ``resolution``-pixel images.

    Raises:
        ConfigError: ``resolution`` is not a multiple of the preset's size multiple.
    """
    from microforge.trainers.unet.lightning import UNetModule

    return UNetModule(preset=preset, image_size=resolution)
