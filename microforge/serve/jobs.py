"""Background jobs the state actor runs as Ray tasks: crystal dataset synthesis and time-lapse analysis.

Both report progress through files (the dataset writer's ``meta/*.json``; one ``frames/*.json``
per analysed frame), so any replica can read progress from the shared data root without
talking to the job.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import ray

from microforge.platform.storage import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

HIST_BINS = 20
STAT_KEYS = (("length", "lengths"), ("width", "widths"), ("aspect_ratio", "aspect_ratios"))


@ray.remote(num_cpus=0, max_retries=0)
def run_synth_job(config: dict[str, Any], n: int, out: str, seed: int, workers: int | None) -> dict[str, Any]:
    """Render a crystal dataset with the Ray Data writer (its tasks take the CPUs; this one waits)."""
    from microforge.datasets.crystals import generate_dataset

    summary = generate_dataset(config, n, out, seed=seed, workers=workers)
    return {"n": summary.n, "rendered": summary.rendered, "reused": summary.reused,
            "seconds": summary.seconds, "images_per_second": summary.images_per_second,
            "counts": summary.counts}


def frame_times(names: list[str]) -> list[float]:
    """A time per frame: the last number in each file name if every name has one, else the rank."""
    numbers = [re.findall(r"\d+(?:\.\d+)?", Path(name).stem) for name in names]
    if names and all(numbers):
        return [float(found[-1]) for found in numbers]
    return [float(i) for i in range(len(names))]


class FrameAnalyzer:
    """Ray Data UDF (one per actor): preprocess and detect each frame, write its overlay and stats."""

    def __init__(self, models_dir: str, model_id: str, pipeline: dict[str, Any], out: str,
                 url_prefix: str, max_side: int, max_pixels: int) -> None:
        from .images import PreprocPipeline
        from .detection import load_detector

        self.detector = load_detector(models_dir, model_id)
        self.pipeline = PreprocPipeline.load(pipeline)
        self.out = Path(out)
        self.url_prefix = url_prefix
        self.max_side, self.max_pixels = max_side, max_pixels

    def analyse(self, index: int, path: str) -> dict[str, Any]:
        from .images import apply_pipeline, decode_image, detection_stats, draw_overlay, encode

        image = decode_image(Path(path).read_bytes(), max_side=self.max_side, max_pixels=self.max_pixels)
        processed = apply_pipeline(image, self.pipeline)
        detections = self.detector.infer(processed)
        overlay = f"overlays/{index:06d}.jpg"
        atomic_write_bytes(self.out / overlay, encode(draw_overlay(processed, detections), ".jpg", 85))
        return {"stats": detection_stats(detections), "overlay_url": f"{self.url_prefix}/{overlay}"}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for index, name, path, t in zip(batch["index"], batch["name"], batch["path"], batch["time"]):
            row = {"index": int(index), "name": str(name), "time": float(t)}
            try:
                row.update(self.analyse(int(index), str(path)))
            except Exception as exc:  # one unreadable frame must not sink the run; it is reported
                row["error"] = f"{type(exc).__name__}: {exc}"
            # Written last: counts as progress.
            atomic_write_text(self.out / "frames" / f"{int(index):06d}.json", json.dumps(row))
            rows.append(json.dumps(row))
        return {"row": np.array(rows, dtype=object)}


def _histogram(values: list[float], edges: np.ndarray) -> dict[str, list[float]]:
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-time counts, means, medians, standard deviations and 20-bin histograms (common edges
    across times)."""
    ok = [r for r in rows if "stats" in r]
    edges = {}
    for key, list_key in STAT_KEYS:
        values = [v for r in ok for v in r["stats"][list_key]]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        edges[key] = np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1)
    per_time = []
    for t in sorted({r["time"] for r in ok}):
        frames = [r for r in ok if r["time"] == t]
        entry: dict[str, Any] = {"time": t, "frames": len(frames),
                                 "count": float(np.mean([r["stats"]["count"] for r in frames]))}
        for key, list_key in STAT_KEYS:
            values = [v for r in frames for v in r["stats"][list_key]]
            entry[f"mean_{key}"] = float(np.mean(values)) if values else 0.0
            entry[f"median_{key}"] = float(np.median(values)) if values else 0.0
            entry[f"std_{key}"] = float(np.std(values)) if values else 0.0
            entry[f"hist_{key}"] = _histogram(values, edges[key])
        per_time.append(entry)
    return {"per_time": per_time, "images": sorted(rows, key=lambda r: r["index"]),
            "processed": len(rows), "failed": len(rows) - len(ok)}


@ray.remote(num_cpus=0, max_retries=0)
def run_timelapse_job(frames: list[dict[str, Any]], models_dir: str, model_id: str, pipeline: dict[str, Any],
                      out: str, url_prefix: str, workers: int, max_side: int, max_pixels: int) -> dict[str, Any]:
    """Analyse ``frames`` (``{index, name, path, time}``) in parallel with Ray Data; write ``result.json``."""
    ds = ray.data.from_items(frames, override_num_blocks=max(1, min(len(frames), 4 * workers)))
    ds = ds.map_batches(
        FrameAnalyzer, batch_size=4, concurrency=workers, num_cpus=1,
        fn_constructor_kwargs={"models_dir": models_dir, "model_id": model_id, "pipeline": pipeline, "out": out,
                               "url_prefix": url_prefix, "max_side": max_side, "max_pixels": max_pixels},
    )
    rows = [json.loads(r["row"]) for r in ds.iter_rows()]
    result = summarise(rows)
    atomic_write_text(Path(out) / "result.json", json.dumps(result))
    return {"processed": result["processed"], "failed": result["failed"]}
