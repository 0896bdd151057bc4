"""CARS datasets: 16-bit images, 16-bit follicle instance masks and per-follicle manifest rows.

Layout of a dataset directory (see :mod:`microforge.datasets.writer` for the common part):

* ``images/0000042.png`` (or ``.tif``): the uint16 CARS image;
* ``masks/0000042.png`` (or ``.tif``): the uint16 follicle instance mask, 0 = no follicle,
  ``k`` = the follicle in row ``k - 1`` of the sample's ``follicles`` list;
* ``manifest.parquet``: per image ``image``, ``mask``, ``n_follicles``, ``n_droplets``,
  ``bright_fraction``, ``background_level``, ``mean``, ``saturated_fraction`` and ``follicles``,
  a list column of structs ``{label, area, centroid_x, centroid_y, touches_border}`` (one per
  follicle, areas in px, centroids in px from the top-left pixel's centre).

PNG files are written by OpenCV; TIFF files by tifffile (zlib, no metadata, so the bytes depend
on the pixels only and every TIFF reader, tifffile without imagecodecs included, opens them).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ...platform.errors import ConfigError
from ..images import FAST_PNG, encode_image
from ..store import Store
from ..writer import (DEFAULT_SHARD_SIZE, DatasetKind, EncodedSample, GenerationOptions, GenerationSummary, generate,
                      sample_stem)
from .config import CarsConfig, load_preset
from .render import RENDERER_VERSION, render_cars

IMAGE_FORMATS = ("png", "tif")


def encode_uint16(image: np.ndarray, image_format: str, png_level: int | str | None = None) -> bytes:
    """Deterministic bytes of a 16-bit image as ``png`` (OpenCV, at ``png_level``) or ``tif``
    (tifffile, zlib)."""
    if image_format == "tif":
        import tifffile

        buffer = io.BytesIO()
        tifffile.imwrite(buffer, image, compression="zlib", metadata=None)
        return buffer.getvalue()
    return encode_image(image, ".png", png_level=png_level)


def encode_cars(config: CarsConfig, seed: int, index: int, options: GenerationOptions) -> EncodedSample:
    sample = render_cars(config, seed, index)
    stem, fmt = sample_stem(index), options.image_format
    image_rel, mask_rel = f"images/{stem}.{fmt}", f"masks/{stem}.{fmt}"
    files = {image_rel: encode_uint16(sample.image, fmt, options.png_level),
             mask_rel: encode_uint16(sample.mask, fmt, options.png_level)}
    meta = sample.meta
    columns = {
        "image": image_rel,
        "mask": mask_rel,
        **{key: meta[key] for key in ("n_follicles", "n_droplets", "bright_fraction", "background_level",
                                       "mean", "saturated_fraction")},
        "follicles": sample.follicles,
    }
    return EncodedSample(files, columns)


def finalize_cars(store: Store, rows: list[dict[str, Any]], options: GenerationOptions) -> dict[str, Any]:
    fractions = [r["bright_fraction"] for r in rows]
    return {"follicles": sum(r["n_follicles"] for r in rows),
            "droplets": sum(r["n_droplets"] for r in rows),
            "bright_fraction_mean": sum(fractions) / len(fractions),
            "bright_fraction_max": max(fractions)}


CARS = DatasetKind(
    name="cars",
    config_cls=CarsConfig,
    renderer_version=RENDERER_VERSION,
    encode=encode_cars,
    owned_dirs=("images", "masks"),
    finalize=finalize_cars,
)


def generate_dataset(
    config: CarsConfig | dict | str | Path,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    size: int | None = None,
    image_format: str = "png",
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    png_level: int | str = FAST_PNG,
    layout: str = "files",
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    overwrite: bool = False,
    address: str | None = None,
) -> GenerationSummary:
    """Render ``n`` CARS images with masks into ``out`` on Ray (see ``microforge.datasets.writer``).

    ``config`` is a CarsConfig, a dict, a preset name or a JSON/YAML file path; ``size``
    overrides its image size. ``out``, ``png_level``, ``layout`` and ``shard_size``: as for
    crystal datasets. Re-running completes only what is missing or corrupt; a directory
    made with another config is refused unless ``overwrite``.

    Raises:
        ConfigError: an invalid config, size or image format (before anything is written).
    """
    if image_format not in IMAGE_FORMATS:
        raise ConfigError(f"CARS images are 16-bit: format must be one of {', '.join(IMAGE_FORMATS)}, "
                          f"got '{image_format}'")
    if isinstance(config, str) and not Path(config).suffix:
        config = load_preset(config)
    config = CarsConfig.load(config)
    if size is not None:
        config = CarsConfig.load({**config.to_json_dict(), "size": size})
    options = GenerationOptions(image_format, split, png_level=png_level, layout=layout, shard_size=shard_size)
    return generate(CARS, config, n, out, seed=seed, options=options, workers=workers, overwrite=overwrite,
                    address=address)
