"""Crystal datasets: rendered images plus DOTA, YOLO-OBB and Ultralytics OBB labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...platform.errors import ConfigError
from .. import labels
from ..images import FAST_PNG, encode_image
from ..obb import clip_boxes
from ..store import Store
from ..writer import (DEFAULT_SHARD_SIZE, IMAGE_FORMATS, DatasetKind, EncodedSample, GenerationOptions,
                      GenerationSummary, generate, sample_stem)
from .config import CrystalConfig
from .render import RENDERER_VERSION, render_crystal

CLASS_NAMES = ("Crystal",)
CLASS_IDS = {name: i for i, name in enumerate(CLASS_NAMES)}


def encode_crystal(config: CrystalConfig, seed: int, index: int, options: GenerationOptions) -> EncodedSample:
    sample = render_crystal(config, seed, index)
    height, width = sample.image.shape[:2]
    boxes = clip_boxes(sample.boxes, width, height, options.extra["min_visible_fraction"])
    stem = sample_stem(index)
    image_rel = f"images/{stem}{IMAGE_FORMATS[options.image_format]}"
    texts = {
        "labels_dota": labels.format_dota(boxes, image_source=Path(image_rel).name),
        "labels_yolo_obb": labels.format_yolo_obb(boxes, width, height, CLASS_IDS),
        "labels": labels.format_ultralytics_obb(boxes, width, height, CLASS_IDS),
    }
    files = {image_rel: encode_image(sample.image, IMAGE_FORMATS[options.image_format], png_level=options.png_level)}
    files.update({f"{d}/{stem}.txt": text.encode() for d, text in texts.items()})
    columns = {
        "image": image_rel,
        **{f"path_{d}": f"{d}/{stem}.txt" for d in texts},
        "lambda": float(sample.meta["lambda"]),
        "t": float(sample.meta["t"]),
        "n_rods": int(sample.meta["n_rods"]),
        "n_labels": len(boxes),
        "n_truncated": sum(b.truncated for b in boxes),
    }
    return EncodedSample(files, columns)


def finalize_crystals(store: Store, rows: list[dict[str, Any]], options: GenerationOptions) -> dict[str, Any]:
    store.write_text("classes.txt", labels.format_classes(CLASS_NAMES))
    if options.layout == "files":  # Ultralytics reads image files named in the split lists
        splits = {s: f"{s}.txt" for s in ("train", "val", "test") if any(r["split"] == s for r in rows)}
        store.write_text("dataset.yaml", labels.format_ultralytics_yaml(None, splits, CLASS_NAMES))
    return {"labels": sum(r["n_labels"] for r in rows), "truncated": sum(r["n_truncated"] for r in rows)}


CRYSTALS = DatasetKind(
    name="crystals",
    config_cls=CrystalConfig,
    renderer_version=RENDERER_VERSION,
    encode=encode_crystal,
    owned_dirs=("images", "labels_dota", "labels_yolo_obb", "labels"),
    finalize=finalize_crystals,
    extra_owned_files=("classes.txt", "dataset.yaml"),
)


def generate_dataset(
    config: CrystalConfig | dict | str | Path,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    image_format: str = "png",
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    min_visible_fraction: float = 0.25,
    png_level: int | str = FAST_PNG,
    layout: str = "files",
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    overwrite: bool = False,
    address: str | None = None,
) -> GenerationSummary:
    """Render ``n`` crystal images with labels into ``out`` (a path or URI) on Ray (see
    ``microforge.datasets.writer``).

    ``config`` is a CrystalConfig, a dict, or a JSON/YAML file path. ``png_level``: ``"fast"`` or
    a zlib level 0-9; ``layout``: ``files`` or ``shards`` (of ``shard_size`` samples). Re-running
    completes only what is missing or corrupt; a dataset made with another config or layout is
    refused unless ``overwrite``.
    """
    if not 0.0 <= min_visible_fraction <= 1.0:  # checked here so a bad value fails before anything is written
        raise ConfigError(f"min_visible_fraction must lie in [0, 1], got {min_visible_fraction}")
    options = GenerationOptions(image_format, split, {"min_visible_fraction": float(min_visible_fraction)},
                                png_level=png_level, layout=layout, shard_size=shard_size)
    return generate(CRYSTALS, CrystalConfig.load(config), n, out, seed=seed, options=options,
                    workers=workers, overwrite=overwrite, address=address)
