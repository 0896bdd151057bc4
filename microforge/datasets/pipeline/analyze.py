"""``analyze``: per-image and aggregate statistics of a dataset (or a folder of images) as a Ray
Data job, written with PNG plots as ``stats.json`` and ``report.html``.

Statistics are those of :func:`~.stats.image_statistics`, in float on the full bit depth. Each
task also returns the image's intensity histogram (:data:`HIST_BINS` bins over [0, 1]) and, for
the first :data:`SAMPLES` images, a thumbnail for the sample grid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...platform.errors import DatasetError
from ...platform.storage import atomic_replace_dir, ensure_writable_dir
from ..manifest import INFO_FILE, read_manifest
from .discover import discover_images, read_source
from .stats import STATISTICS, as_unit_float, image_statistics

HIST_BINS = 256
SAMPLES = 16
THUMB = 96


def _thumbnail(x: np.ndarray) -> np.ndarray:
    """A THUMB x THUMB uint8 view of a unit-range image, stretched to its 0.5/99.5 percentiles."""
    import cv2

    lo, hi = np.percentile(x, [0.5, 99.5])
    view = np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(x)
    return cv2.resize((view * 255).round().astype(np.uint8), (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def _analyze_batch(batch: dict[str, np.ndarray], *, root: str) -> dict[str, np.ndarray]:
    """Ray Data UDF: one JSON result per item (statistics, histogram, thumbnail or error)."""
    results = []
    for item_json in batch["item"].tolist():
        item = json.loads(item_json)
        result: dict[str, Any] = {"index": item["index"], "image": item["image"]}
        try:
            source = read_source((Path(root) / item["image"]).read_bytes(), item["image"])
            x = as_unit_float(source.image)
            result.update(image_statistics(x), dtype=source.dtype, height=x.shape[0], width=x.shape[1],
                          histogram=np.histogram(np.clip(x, 0, 1), HIST_BINS, (0.0, 1.0))[0].tolist())
            if item["index"] < SAMPLES:
                result["thumbnail"] = _thumbnail(x).tolist()
        except (DatasetError, OSError) as exc:
            result["error"] = str(exc)
        results.append(json.dumps(result))
    return {"result": np.array(results, dtype=object)}


def _items(path: Path) -> list[dict[str, Any]]:
    """A dataset's images in manifest order (rows without one skipped), else a folder's images."""
    if (path / INFO_FILE).is_file():
        images = [rel for rel in read_manifest(path).column("image").to_pylist() if rel]
    else:
        images = discover_images(path)
    if not images:
        raise DatasetError(f"{path} has no images to analyze")
    return [{"index": i, "image": rel} for i, rel in enumerate(images)]


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, std, min, median and max of every statistic over the images."""
    out = {}
    for name in STATISTICS:
        values = np.array([r[name] for r in rows], dtype=np.float64)
        out[name] = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                     "median": float(np.median(values)), "max": float(values.max())}
    return out


def analyze(path: str | Path, report: str | Path, *, workers: int | None = None,
            address: str | None = None) -> dict[str, Any]:
    """Analyze the dataset (or image folder) ``path`` into the report directory ``report``.

    Raises:
        DatasetError: no images, or ``report`` is a non-empty directory that is not a report.
    """
    import ray

    from ...platform.runtime import ray_runtime, single_stage
    from .report import write_report

    root = Path(path).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    items = _items(root)
    report = ensure_writable_dir(report)
    if report.exists() and any(report.iterdir()) and not (report / "stats.json").is_file():
        raise DatasetError(f"{report} is not empty and is not an analyze report; choose a new --out")
    with ray_runtime(address=address, num_cpus=workers):
        rows = [{"item": json.dumps(item)} for item in items]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // 4)))
        ds = ds.map_batches(_analyze_batch, batch_size=4, num_cpus=1, concurrency=workers,
                            fn_kwargs={"root": str(root)})
        results = sorted((json.loads(r["result"]) for r in single_stage(ds).iter_rows()), key=lambda r: r["index"])
    if len(results) != len(items):
        raise DatasetError(f"analyze stopped after {len(results)} of {len(items)} images; re-run it")
    good = [r for r in results if "error" not in r]
    if not good:
        raise DatasetError(f"none of the {len(results)} images of {root} could be read")
    histograms = [np.array(r.pop("histogram")) for r in good]
    histogram = np.sum(histograms, axis=0)
    thumbnails = [np.array(r.pop("thumbnail"), dtype=np.uint8) for r in good if "thumbnail" in r]
    stats = {
        "dataset": str(root), "images": len(good),
        "errors": [{"image": r["image"], "error": r["error"]} for r in results if "error" in r],
        "aggregate": aggregate(good), "histogram": {"bins": HIST_BINS, "range": [0.0, 1.0],
                                                    "counts": histogram.tolist()},
        "per_image": good,
    }
    atomic_replace_dir(report, lambda tmp: write_report(tmp, stats, histograms[:8], thumbnails))
    return stats
