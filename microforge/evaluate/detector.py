"""Evaluate an oriented-box crystal detector on a labelled dataset directory.

:func:`score_detections` is the metric (no model): rotated-IoU AP@0.5 and AP@0.5:0.95 (see
:mod:`microforge.trainers.detector.metrics`), the relative count error of each image (detections
scoring at least ``count_score`` against the labelled rods), and the relative length and width
errors of the detections matched at IoU 0.5. The report gives medians over images (count) and
over matched rods (length, width), as the issue's targets are stated.
:func:`evaluate_detector` runs an artifact over a split of a dataset directory read through the
manifest reader, counting at the artifact's recorded count score unless given one;
:func:`write_report` writes ``report.json``, ``per_image.csv``, ``pr_curve.png``
and ``overlays.png``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from microforge.platform.errors import DatasetError, MicroforgeError
from microforge.platform.storage import atomic_write_bytes, atomic_write_text
from microforge.trainers.detector.targets import COUNT_SCORE
from microforge.trainers.detector.metrics import COCO_THRESHOLDS, average_precision, match_image, pr_curve

__all__ = ["DetectorEval", "evaluate_detector", "score_detections", "write_report"]

REPORT_KEYS = ("ap50", "ap50_95", "count_error", "length_error", "width_error")


@dataclass
class DetectorEval:
    """A report (JSON) and what the pictures need: images, ground truth and detections per image."""

    report: dict[str, Any]
    curve: tuple[np.ndarray, np.ndarray] = field(repr=False)
    images: list[np.ndarray] = field(default_factory=list, repr=False)
    gts: list[np.ndarray] = field(default_factory=list, repr=False)
    preds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def score_detections(preds: Sequence[tuple[np.ndarray, np.ndarray]], gts: Sequence[np.ndarray],
                     names: Sequence[str] | None = None, count_score: float = COUNT_SCORE) -> DetectorEval:
    """Score detections ``[(boxes (D, 5), scores (D,)), ...]`` against ground truth ``[(G, 5), ...]``.

    Returns:
        a :class:`DetectorEval` whose report has ``ap50``, ``ap50_95``, ``count_error`` (median
        over images of ``|found - rods| / rods``; images without rods count ``found``),
        ``length_error`` and ``width_error`` (median over rods matched at IoU 0.5 of
        ``|pred - true| / true``), ``ap_by_iou`` and ``per_image`` rows.

    Raises:
        MicroforgeError: as many detections as ground-truth lists are needed.
    """
    if len(preds) != len(gts):
        raise MicroforgeError(f"{len(preds)} detection lists for {len(gts)} labelled images")
    names = list(names) if names is not None else [str(i) for i in range(len(gts))]
    matches, rows, length_errors, width_errors = [], [], [], []
    for name, (boxes, scores), gt in zip(names, preds, gts):
        boxes, gt = np.asarray(boxes, np.float64).reshape(-1, 5), np.asarray(gt, np.float64).reshape(-1, 5)
        m = match_image(boxes, scores, gt)
        matches.append(m)
        found = int((np.asarray(scores) >= count_score).sum())
        hit = m.tp[0]
        g = m.matched_gt[0][hit]
        len_err = np.abs(boxes[hit, 2] - gt[g, 2]) / np.maximum(gt[g, 2], 1e-9)
        wid_err = np.abs(boxes[hit, 3] - gt[g, 3]) / np.maximum(gt[g, 3], 1e-9)
        length_errors.extend(len_err.tolist())
        width_errors.extend(wid_err.tolist())
        single = pr_curve([m]).ap
        rows.append({"image": name, "rods": len(gt), "found": found,
                     "count_error": abs(found - len(gt)) / len(gt) if len(gt) else float(found),
                     "matched50": int(hit.sum()), "ap50": single,
                     "length_error": _median(len_err.tolist()), "width_error": _median(wid_err.tolist()),
                     "median_length": _median(gt[:, 2].tolist()), "median_found_length": _median(
                         boxes[np.asarray(scores) >= count_score, 2].tolist())})
    ap = average_precision(matches)
    curve = pr_curve(matches)
    report = {
        "ap50": ap["ap50"],
        "ap50_95": ap["ap50_95"],
        "count_error": _median([r["count_error"] for r in rows]),
        "length_error": _median(length_errors),
        "width_error": _median(width_errors),
        "ap_by_iou": {f"{t:.2f}": ap[f"ap_{int(round(t * 100))}"] for t in COCO_THRESHOLDS},
        "images": len(rows),
        "rods": int(sum(r["rods"] for r in rows)),
        "count_score": count_score,
        "per_image": rows,
    }
    return DetectorEval(report, (curve.recall, curve.precision), gts=[np.asarray(g) for g in gts],
                        preds=[(np.asarray(b), np.asarray(s)) for b, s in preds])


def _pick_split(dataset_dir: str, split: str | None) -> str:
    from microforge.datasets.manifest import manifest_splits

    splits = manifest_splits(dataset_dir)
    if split is not None:
        if split not in splits:
            raise DatasetError(f"{dataset_dir} has no split '{split}'; its splits: {', '.join(splits)}")
        return split
    for name in ("test", "val", "train"):
        if name in splits:
            return name
    return next(iter(splits))


def evaluate_detector(model_dir: str | Path, data_dir: str | Path, *, split: str | None = None,
                      max_images: int | None = None, count_score: float | None = None, tile: int = 1024,
                      overlap: int = 384, address: str | None = None,
                      progress: Callable[[int, int], None] | None = None) -> DetectorEval:
    """Detect the rods of every image of ``split`` (default: ``test``, else ``val``, else ``train``)
    of the dataset ``data_dir`` with the artifact ``model_dir`` and score them.

    Raises:
        ArtifactError: a missing or corrupt artifact; MicroforgeError: not a detector;
        DatasetError: no such dataset or split, or no oriented-box labels.
    """
    import torch

    from microforge.datasets.manifest import column_kinds, manifest_dataset, read_manifest
    from microforge.platform.runtime import ray_runtime
    from microforge.trainers.detector.data import LABEL_COLUMNS, _parse_labels
    from microforge.trainers.detector.predict import TilingSettings, detect_image, recorded_count_score, recorded_scale
    from microforge.trainers.detector.targets import DecodeSettings
    from microforge.trainers.registry import load_artifact

    artifact = load_artifact(model_dir)
    if artifact.task != "detect":
        raise MicroforgeError(f"{model_dir} holds a '{artifact.workload}' model for task '{artifact.task}', "
                              "not an oriented-box detector")
    data_dir = str(Path(data_dir).absolute()) if "://" not in str(data_dir) else str(data_dir)
    kinds = column_kinds(read_manifest(data_dir))
    labels = [(c, f) for c, f in LABEL_COLUMNS if kinds.get(c) == "text"]
    if not labels:
        raise DatasetError(f"{data_dir} has no oriented-box labels (a manifest column "
                           f"{' or '.join(c for c, _ in LABEL_COLUMNS)})")
    column, fmt = labels[0]
    split = _pick_split(data_dir, split)
    model = artifact["model"]
    if torch.cuda.is_available():
        model.cuda()
    tiling = TilingSettings(tile, overlap)
    scale = recorded_scale(artifact.preprocessing)
    if count_score is None:
        count_score = recorded_count_score(artifact.preprocessing)
    decode = DecodeSettings(score_threshold=0.01)
    images, gts, preds, names = [], [], [], []
    started = time.perf_counter()
    with ray_runtime(address):
        dataset = manifest_dataset(data_dir, split, columns=("image", column, "index"))
        if max_images is not None:
            dataset = dataset.limit(max_images)
        for batch in dataset.iter_batches(batch_size=4, batch_format="numpy"):
            for image, text, index in zip(batch["image"], batch[column], batch["index"]):
                h, w = np.shape(image)[:2]
                found = detect_image(model, image, transform=artifact.transform, decode=decode, tiling=tiling,
                                     scale=scale)
                images.append(np.asarray(image))
                gts.append(_parse_labels(str(text), fmt, w, h))
                preds.append((found.boxes, found.scores))
                names.append(f"{int(index):07d}")
                if progress:
                    progress(len(images), max_images or -1)
    if not images:
        raise DatasetError(f"split '{split}' of {data_dir} has no images")
    seconds = time.perf_counter() - started
    result = score_detections(preds, gts, names, count_score)
    result.images = images
    result.report = {"model": str(Path(model_dir).absolute()), "workload": artifact.workload, "data": data_dir,
                     "split": split, "labels": column, "seconds": seconds,
                     "images_per_s": len(images) / seconds if seconds > 0 else None,
                     "training_metrics": artifact.metrics, **result.report}
    return result


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def write_report(result: DetectorEval, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``per_image.csv``, ``pr_curve.png`` and ``overlays.png`` into
    ``out_dir`` (each atomically; pictures are drawn before anything is written)."""
    from .detector_plots import draw_overlays, draw_pr_curve, png

    pr, overlays = png(draw_pr_curve(*result.curve, result.report)), png(draw_overlays(result))
    out = Path(out_dir)
    paths = {"report": out / "report.json", "table": out / "per_image.csv", "pr_curve": out / "pr_curve.png",
             "overlays": out / "overlays.png"}
    atomic_write_text(paths["report"], json.dumps(result.report, indent=2) + "\n")
    atomic_write_text(paths["table"], _csv(result.report["per_image"]))
    atomic_write_bytes(paths["pr_curve"], pr)
    atomic_write_bytes(paths["overlays"], overlays)
    return paths
