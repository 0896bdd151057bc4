"""Evaluate a delineation artifact on fresh synthetic blobs: metrics per SNR bin, report and pictures.

``evaluate_unet(artifact)`` renders ``samples`` blobs with Ray Data (at the artifact's training
size, the full noise range), predicts their masks with the artifact's model, and scores every
sample (Dice, IoU, HD95, boundary F1, and ``clean_dice`` on the noise-free rendering).
:func:`summarise_by_snr` groups per-sample scores into SNR bins; :func:`write_report` writes
``report.json``, ``dice_vs_snr.png`` and ``overlays.png``. Pictures are drawn with OpenCV.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from microforge.platform.errors import ConfigError, MicroforgeError
from microforge.platform.storage import atomic_write_bytes, atomic_write_text

from ..metrics import dice_score, segmentation_metrics
from ..predict import segment_probabilities
from ..registry import LoadedArtifact

__all__ = [
    "EvalResult",
    "SNR_BIN_EDGES",
    "draw_dice_vs_snr",
    "draw_overlays",
    "evaluate_unet",
    "predict_masks",
    "score_samples",
    "snr_bin_label",
    "summarise_by_snr",
    "write_report",
]

log = logging.getLogger(__name__)

# Bin edges in dB; the blob renderer's full noise range spans about -10 to +25 dB.
SNR_BIN_EDGES: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
METRICS = ("dice", "iou", "hd95", "boundary_f1", "clean_dice")
EVAL_SEED = 12345  # different from any default training seed, so eval blobs are unseen


def predict_masks(artifact: LoadedArtifact, images: Any, scale: float | None = None) -> np.ndarray:
    """Binary masks ``(B, 1, H, W)`` (uint8) of ``images`` ``(B, 1, H, W)``, ``(B, H, W)`` or
    ``(H, W)`` of any dtype the artifact's transform takes (the same function as Serve's
    ``/predict``: :func:`~microforge.trainers.predict.segment_probabilities`), resized to the
    artifact's training scale, or by ``scale`` when given, and back.

    Raises:
        ConfigError: a dtype or value range the transform rejects, or a bad shape.
    """
    array = np.asarray(images)
    if array.ndim == 4:
        if array.shape[1] != 1:
            raise ConfigError(f"images must be (B, 1, H, W), (B, H, W) or (H, W); got shape {array.shape}")
        array = array[:, 0]
    elif array.ndim == 2:
        array = array[None]
    elif array.ndim != 3:
        raise ConfigError(f"images must be (B, 1, H, W), (B, H, W) or (H, W); got shape {array.shape}")
    model = artifact["model"]
    probs = segment_probabilities(model, artifact.transform, list(array),
                                  size_multiple=int(artifact.preprocessing.get("size_multiple", 1)),
                                  preprocessing=artifact.preprocessing, scale=scale)
    threshold = 1.0 / (1.0 + math.exp(-float(artifact.preprocessing.get("threshold", 0.0))))
    return np.stack([prob > threshold for prob in probs])[:, None].astype(np.uint8)


def score_samples(pred: np.ndarray, mask: np.ndarray, clean_pred: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-sample ``dice, iou, hd95, boundary_f1`` (and ``clean_dice`` when ``clean_pred`` is given)."""
    scores = segmentation_metrics(pred, mask, reduction="none")
    out = {name: scores[name] for name in ("dice", "iou", "hd95", "boundary_f1")}
    if clean_pred is not None:
        out["clean_dice"] = dice_score(clean_pred, mask, reduction="none")
    return out


def snr_bin_label(lo: float | None, hi: float | None) -> str:
    """``"< -5"``, ``"-5 to 0"``, ``">= 20"`` (dB)."""
    if lo is None:
        return f"< {hi:g}"
    if hi is None:
        return f">= {lo:g}"
    return f"{lo:g} to {hi:g}"


def summarise_by_snr(snr_db: np.ndarray, scores: Mapping[str, np.ndarray],
                     edges: Iterable[float] = SNR_BIN_EDGES) -> list[dict[str, Any]]:
    """Mean of every score per SNR bin ``[lo, hi)``; empty bins have ``n = 0`` and null means."""
    edges = list(edges)
    bounds = list(zip([None, *edges], [*edges, None]))
    snr = np.asarray(snr_db, dtype=np.float64)
    rows = []
    for lo, hi in bounds:
        inside = np.ones_like(snr, dtype=bool)
        if lo is not None:
            inside &= snr >= lo
        if hi is not None:
            inside &= snr < hi
        n = int(inside.sum())
        row = {"bin": snr_bin_label(lo, hi), "lo_db": lo, "hi_db": hi, "n": n}
        row.update({name: float(np.mean(values[inside])) if n else None for name, values in scores.items()})
        rows.append(row)
    return rows


@dataclass
class EvalResult:
    """Scores of one evaluation, per sample and summarised.

    Attributes:
        report: the JSON report (settings, overall means, ``snr_bins``, ``per_sample``).
        images, masks, preds: arrays ``(N, 1, H, W)`` kept for the overlay picture.
    """

    report: dict[str, Any]
    images: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)
    preds: np.ndarray = field(repr=False)


def _load_segmenter(model_dir: str | Path) -> LoadedArtifact:
    from ..registry import load_artifact

    artifact = load_artifact(model_dir)
    if artifact.task != "segment":
        raise MicroforgeError(f"{model_dir} holds a '{artifact.workload}' model for task '{artifact.task}', "
                              "not a segmentation model")
    return artifact


def evaluate_unet(
    model_dir: str | Path,
    *,
    samples: int = 200,
    size: int | None = None,
    seed: int = EVAL_SEED,
    batch_size: int = 16,
    noise_scale: float = 1.0,
    mixed_prob: float = 0.2,
    address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    input_scale: float | None = None,
) -> EvalResult:
    """Score a delineation artifact on ``samples`` fresh blobs rendered with Ray Data.

    Args:
        model_dir: the artifact directory.
        size: image side (default: the artifact's training size).
        seed: blob dataset seed (indices ``0 .. samples - 1``).
        noise_scale, mixed_prob: noise of the evaluation blobs (default: the full range).
        address: Ray cluster address (default: running Ray, else an embedded one).
        progress: called with ``(done, total)`` after each batch.
        input_scale: resize factor of the blobs before the network (default: the artifact's
            training scale, i.e. the longer side to its training size; 1 for old artifacts).

    Raises:
        ArtifactError: missing or corrupt artifact; MicroforgeError: not a U-Net, or a size that
            does not fit the model; ConfigError: invalid blob settings.
    """
    import torch

    from microforge.datasets.blobs import BlobConfig
    from microforge.platform.runtime import ray_runtime

    from ..data import synthetic_dataset
    from .workload import RENDERER

    if samples < 1 or batch_size < 1:
        raise MicroforgeError(f"samples and batch size must be >= 1, got {samples} and {batch_size}")
    artifact = _load_segmenter(model_dir)
    card = artifact.card
    size = size or int(card.preprocessing.get("image_size") or 128)
    multiple = int(card.preprocessing.get("size_multiple", 1))
    if size % multiple:
        raise MicroforgeError(f"--size {size} does not fit the model: use a multiple of {multiple}")
    train_seed = card.provenance.get("data", {}).get("seed")
    if train_seed == seed:
        log.warning("evaluation seed %d equals the training seed: validation blobs are re-used", seed)
    config = BlobConfig.load({"size": size, "noise_scale": noise_scale, "mixed_prob": mixed_prob}).to_json_dict()
    if torch.cuda.is_available():
        artifact["model"].cuda()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("image", "mask", "pred", "clean_pred", "snr_db", "index")}
    with ray_runtime(address):
        dataset = synthetic_dataset(RENDERER, config, seed, samples)
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            parts["image"].append(batch["image"])
            parts["mask"].append(batch["mask"].astype(np.uint8))
            parts["pred"].append(predict_masks(artifact, batch["image"], input_scale))
            parts["clean_pred"].append(predict_masks(artifact, batch["clean"], input_scale))
            parts["snr_db"].append(batch["snr_db"])
            parts["index"].append(batch["index"])
            if progress:
                progress(sum(len(x) for x in parts["index"]), samples)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    scores = score_samples(arrays["pred"], arrays["mask"], arrays["clean_pred"])
    report = {
        "model": str(Path(model_dir).absolute()),
        "workload": artifact.workload,
        "components": {name: c.cls for name, c in card.components.items()},
        "training_metrics": card.metrics,
        "samples": samples,
        "size": size,
        "seed": seed,
        "noise_scale": noise_scale,
        "mixed_prob": mixed_prob,
        "input_scale": input_scale,
        "overall": {name: float(np.mean(v)) for name, v in scores.items()},
        "snr_bins": summarise_by_snr(arrays["snr_db"], scores),
        "per_sample": [
            {"index": int(i), "snr_db": float(s), **{name: float(scores[name][k]) for name in scores}}
            for k, (i, s) in enumerate(zip(arrays["index"], arrays["snr_db"]))
        ],
    }
    return EvalResult(report, arrays["image"], arrays["mask"], arrays["pred"])


# --------------------------------------------------------------------------------------------
# Pictures (OpenCV; colours are BGR)


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise MicroforgeError("cannot encode PNG")
    return encoded.tobytes()


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45,
          color: tuple[int, int, int] = (40, 40, 40)) -> None:
    import cv2

    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def draw_dice_vs_snr(report: Mapping[str, Any], width: int = 720, height: int = 440) -> np.ndarray:
    """Per-sample Dice against SNR (grey dots) and the mean per SNR bin (blue line), as a BGR image."""
    import cv2

    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 40, 50
    samples = report["per_sample"]
    snr = np.array([s["snr_db"] for s in samples], np.float64)
    dice = np.array([s["dice"] for s in samples], np.float64)
    lo = math.floor(min(snr.min(initial=-10.0), -10.0) / 5) * 5
    hi = math.ceil(max(snr.max(initial=25.0), 25.0) / 5) * 5

    def to_px(x: float, y: float) -> tuple[int, int]:
        px = left + (x - lo) / (hi - lo) * (width - left - right)
        py = top + (1.0 - y) * (height - top - bottom)
        return int(round(px)), int(round(py))

    for y in np.linspace(0, 1, 6):  # horizontal grid and y ticks
        cv2.line(canvas, to_px(lo, y), to_px(hi, y), (225, 225, 225), 1)
        _text(canvas, f"{y:.1f}", (to_px(lo, y)[0] - 35, to_px(lo, y)[1] + 5))
    for x in range(int(lo), int(hi) + 1, 5):  # x ticks
        cv2.line(canvas, to_px(x, 0), to_px(x, 1), (240, 240, 240), 1)
        _text(canvas, f"{x}", (to_px(x, 0)[0] - 10, to_px(x, 0)[1] + 18))
    cv2.rectangle(canvas, to_px(lo, 1), to_px(hi, 0), (90, 90, 90), 1)
    for x, y in zip(snr, dice):
        cv2.circle(canvas, to_px(x, y), 2, (170, 170, 170), -1, cv2.LINE_AA)
    points = []
    for row in report["snr_bins"]:
        if not row["n"]:
            continue
        inside = [(s, d) for s, d in zip(snr, dice)
                  if (row["lo_db"] is None or s >= row["lo_db"]) and (row["hi_db"] is None or s < row["hi_db"])]
        points.append(to_px(float(np.mean([s for s, _ in inside])), row["dice"]))
    if len(points) > 1:
        cv2.polylines(canvas, [np.array(points, np.int32)], False, (200, 90, 20), 2, cv2.LINE_AA)
    for p in points:
        cv2.circle(canvas, p, 5, (200, 90, 20), -1, cv2.LINE_AA)
    _text(canvas, "Dice vs SNR (grey: samples, blue: mean per SNR bin)", (left, 25), 0.55)
    _text(canvas, "SNR (dB)", (width // 2 - 30, height - 12), 0.5)
    _text(canvas, "Dice", (8, top - 12), 0.5)
    return canvas


def draw_overlays(result: EvalResult, count: int = 12, columns: int = 4, tile: int = 192) -> np.ndarray:
    """A grid of samples spread over the SNR range: the noisy input with the true outline (green)
    and the predicted outline (red), captioned with SNR and Dice, as a BGR image."""
    import cv2

    samples = result.report["per_sample"]
    order = np.argsort([s["snr_db"] for s in samples])
    picks = order[np.unique(np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int))]
    rows = math.ceil(len(picks) / columns)
    grid = np.full((rows * (tile + 22), columns * tile, 3), 255, np.uint8)
    for k, i in enumerate(picks):
        image = cv2.resize(result.images[i, 0], (tile, tile), interpolation=cv2.INTER_NEAREST)
        rgb = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        for mask, colour in ((result.masks[i, 0], (60, 200, 60)), (result.preds[i, 0], (40, 40, 230))):
            big = cv2.resize(mask.astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgb, contours, -1, colour, 2, cv2.LINE_AA)
        r, c = divmod(k, columns)
        y, x = r * (tile + 22), c * tile
        grid[y:y + tile, x:x + tile] = rgb
        _text(grid, f"SNR {samples[i]['snr_db']:.1f} dB  Dice {samples[i]['dice']:.2f}", (x + 4, y + tile + 16), 0.42)
    return grid


def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``dice_vs_snr.png`` and ``overlays.png`` into ``out_dir`` (atomically each)."""
    out = Path(out_dir)
    paths = {"report": out / "report.json", "plot": out / "dice_vs_snr.png", "overlays": out / "overlays.png"}
    atomic_write_text(paths["report"], json.dumps(result.report, indent=2) + "\n")
    atomic_write_bytes(paths["plot"], _png(draw_dice_vs_snr(result.report)))
    atomic_write_bytes(paths["overlays"], _png(draw_overlays(result)))
    return paths
