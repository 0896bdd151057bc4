"""Pictures of a detector evaluation (OpenCV, BGR): the precision-recall curve and an overlay grid."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from microforge.datasets.rotated import boxes_corners
from microforge.platform.errors import MicroforgeError

if TYPE_CHECKING:
    from .detector import DetectorEval

__all__ = ["draw_overlays", "draw_pr_curve", "png"]

GT_COLOUR = (60, 200, 60)     # green: labelled rods
PRED_COLOUR = (40, 40, 230)   # red: detections at or above the count score


def png(image: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise MicroforgeError("cannot encode PNG")
    return encoded.tobytes()


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45) -> None:
    import cv2

    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (40, 40, 40), 1, cv2.LINE_AA)


def draw_pr_curve(recall: np.ndarray, precision: np.ndarray, report: Mapping[str, Any], width: int = 560,
                  height: int = 460) -> np.ndarray:
    """The interpolated precision-recall curve at IoU 0.5 (the area under it is AP@0.5)."""
    import cv2

    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 40, 50

    def px(r: float, p: float) -> tuple[int, int]:
        return (int(round(left + r * (width - left - right))), int(round(top + (1 - p) * (height - top - bottom))))

    for v in np.linspace(0, 1, 6):
        cv2.line(canvas, px(0, v), px(1, v), (225, 225, 225), 1)
        cv2.line(canvas, px(v, 0), px(v, 1), (235, 235, 235), 1)
        _text(canvas, f"{v:.1f}", (px(0, v)[0] - 35, px(0, v)[1] + 5))
        _text(canvas, f"{v:.1f}", (px(v, 0)[0] - 10, px(v, 0)[1] + 18))
    cv2.rectangle(canvas, px(0, 1), px(1, 0), (90, 90, 90), 1)
    if len(recall):
        # A step curve: precision holds until recall reaches the next detection's.
        points, previous = [], 0.0
        for r, p in zip(recall.tolist(), precision.tolist()):
            points += [px(previous, p), px(r, p)]
            previous = r
        cv2.polylines(canvas, [np.array(points, np.int32)], False, (200, 90, 20), 2, cv2.LINE_AA)
    _text(canvas, f"PR at IoU 0.5: AP50 {report['ap50']:.3f}, AP50:95 {report['ap50_95']:.3f}", (left, 25), 0.5)
    _text(canvas, "recall", (width // 2 - 20, height - 12), 0.5)
    _text(canvas, "precision", (4, top - 12), 0.5)
    return canvas


def draw_overlays(result: "DetectorEval", count: int = 8, columns: int = 4, tile: int = 320) -> np.ndarray:
    """A grid of images (best to worst count error, evenly picked): labelled rods in green,
    detections at or above the count score in red, captioned with rods / found and AP50."""
    import cv2

    rows_ = result.report["per_image"]
    if not result.images:
        return np.full((tile, tile, 3), 255, np.uint8)
    order = np.argsort([r["count_error"] for r in rows_], kind="stable")
    picks = order[np.unique(np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int))]
    n_rows = math.ceil(len(picks) / columns)
    grid = np.full((n_rows * (tile + 22), min(columns, len(picks)) * tile, 3), 255, np.uint8)
    threshold = result.report["count_score"]
    for k, i in enumerate(picks):
        image = np.asarray(result.images[i])
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if gray.dtype != np.uint8:
            gray = cv2.normalize(gray.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        h, w = gray.shape
        scale = tile / max(h, w)
        canvas = cv2.cvtColor(cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                                         interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
        boxes, scores = result.preds[i]
        for polys, colour in ((boxes_corners(result.gts[i]), GT_COLOUR),
                              (boxes_corners(boxes[scores >= threshold]), PRED_COLOUR)):
            cv2.polylines(canvas, [np.round(p * scale).astype(np.int32) for p in polys], True, colour, 1, cv2.LINE_AA)
        r, c = divmod(k, columns)
        y, x = r * (tile + 22), c * tile
        grid[y:y + canvas.shape[0], x:x + canvas.shape[1]] = canvas
        row = rows_[i]
        _text(grid, f"{row['image']}: {row['found']}/{row['rods']} rods, AP50 {row['ap50']:.2f}",
              (x + 4, y + tile + 16), 0.42)
    return grid
