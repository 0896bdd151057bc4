"""Image sets for evaluation: discovery, decoding and float conversion on the full bit depth.

A **set** is either a directory of image files (``.png``, ``.tif``, ``.tiff``, ``.jpg``,
``.jpeg``, found recursively, in sorted path order) or a microforge dataset directory (one with
``dataset.json`` and ``manifest.parquet``), whose ``image`` column names the files.

Images are converted to float32 ``(C, H, W)`` without any 8-bit step: integer images are divided
by their dtype's maximum (255, 65535, ...), so a 16-bit image keeps all of its 65,536 levels;
float images in ``[0, 1]`` are kept, float images in ``[-1, 1]`` (generator outputs) are mapped
to ``[0, 1]``, and any other float range is stretched per image from its minimum to its maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets.manifest import IMAGE_SUFFIXES, decode_image, read_manifest
from ..platform.errors import ConfigError

__all__ = ["ImageSet", "channels_of", "find_images", "grey", "to_float"]


@dataclass(frozen=True)
class ImageSet:
    """The files of one set, and its channel count (read from its first image)."""

    root: Path
    paths: tuple[Path, ...]
    channels: int

    @property
    def name(self) -> str:
        return self.root.name or str(self.root)


def find_images(path: str | Path, *, max_images: int | None = None, role: str = "set") -> ImageSet:
    """The images of a set (see the module doc), at most ``max_images`` (the first in order).

    Raises:
        ConfigError: no such directory, a dataset directory without an ``image`` column, or no
            images.
        DatasetError: an unreadable manifest, or an undecodable first image.
    """
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"{role} {root} is not a directory")
    if (root / "manifest.parquet").is_file() and (root / "dataset.json").is_file():
        table = read_manifest(root)
        if "image" not in table.column_names:
            raise ConfigError(f"{role} {root}: the dataset's manifest has no 'image' column "
                              f"(columns: {', '.join(table.column_names)})")
        paths = [root / str(rel) for rel in table.column("image").to_pylist() if rel]
    else:
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if max_images is not None:
        paths = paths[:max_images]
    if not paths:
        raise ConfigError(f"{role} {root} holds no images (.png, .jpg, .jpeg, .tif, .tiff, searched recursively)")
    return ImageSet(root, tuple(paths), channels_of(decode_image(paths[0])))


def channels_of(image: np.ndarray) -> int:
    """Channels of a decoded image: 1 for ``(H, W)``, ``C`` for ``(H, W, C)``."""
    return 1 if image.ndim == 2 else int(image.shape[-1])


def to_float(image: np.ndarray) -> np.ndarray:
    """A decoded image ``(H, W)`` or ``(H, W, C)`` -> float32 ``(C, H, W)`` in ``[0, 1]``.

    Raises:
        ConfigError: not a 2-D or 3-D numeric array, or non-finite float values.
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3) or array.dtype.kind not in "uifb":
        raise ConfigError(f"an image must be a (H, W) or (H, W, C) numeric array, got {array.dtype} {array.shape}")
    if array.dtype.kind in "ub":
        x = array.astype(np.float32) / np.float32(1 if array.dtype.kind == "b" else np.iinfo(array.dtype).max)
    elif array.dtype.kind == "i":
        info = np.iinfo(array.dtype)
        x = (array.astype(np.float64) - info.min) / (info.max - info.min)
    else:
        x = array.astype(np.float32)
        if not np.isfinite(x).all():
            raise ConfigError("a float image holds NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo >= 0.0 and hi <= 1.0:
            pass
        elif lo >= -1.0 and hi <= 1.0:
            x = (x + 1.0) / 2.0
        else:
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    x = x.astype(np.float32)
    return x[None] if x.ndim == 2 else np.ascontiguousarray(np.moveaxis(x, -1, 0))


def grey(x: np.ndarray) -> np.ndarray:
    """The channel mean of a float ``(C, H, W)`` image: ``(H, W)`` float64."""
    return np.asarray(x, dtype=np.float64).mean(axis=0)
