"""Pictures of ``eval cyclegan``: the scores against epoch, and the best epoch's outputs."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["best_grid", "score_plot"]

COLOURS = {"dice": (40, 40, 200), "ssim": (40, 160, 40), "hsv": (200, 80, 40), "fd": (120, 40, 160)}  # BGR


def score_plot(rows: Sequence[dict[str, Any]], best_epoch: int, size: tuple[int, int] = (360, 640)) -> np.ndarray:
    """Each score, scaled to its own range, against epoch; the best epoch marked."""
    import cv2

    h, w = size
    image = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 50, w - 170, 20, h - 40
    cv2.rectangle(image, (left, top), (right, bottom), (200, 200, 200), 1)
    epochs = [r["epoch"] for r in rows]
    lo_e, hi_e = min(epochs), max(max(epochs), min(epochs) + 1)

    def x_of(epoch: float) -> int:
        return int(left + (right - left) * (epoch - lo_e) / (hi_e - lo_e))

    for k, (name, colour) in enumerate(COLOURS.items()):
        values = np.array([r[name] for r in rows], float)
        finite = values[np.isfinite(values)]
        label = f"{name} (n/a)"
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            span = hi - lo if hi > lo else 1.0
            points = [(x_of(e), int(bottom - (bottom - top) * (v - lo) / span)) for e, v in zip(epochs, values)
                      if np.isfinite(v)]
            cv2.polylines(image, [np.array(points, np.int32)], False, colour, 2, cv2.LINE_AA)
            for p in points:
                cv2.circle(image, p, 3, colour, -1, cv2.LINE_AA)
            label = f"{name} {lo:.3g}..{hi:.3g}"
        cv2.putText(image, label, (right + 8, top + 20 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                    cv2.LINE_AA)
    cv2.line(image, (x_of(best_epoch), top), (x_of(best_epoch), bottom), (0, 0, 0), 1)
    cv2.putText(image, f"best epoch {best_epoch}", (right + 8, top + 120), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    for e in sorted({lo_e, hi_e, best_epoch}):
        cv2.putText(image, str(e), (x_of(e) - 6, bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(image, "epoch (each score scaled to its range)", (left, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    return image


def best_grid(test: dict[str, np.ndarray], fakes: np.ndarray, rows: int = 8, tile: int = 96) -> np.ndarray:
    """Rows of A, fake B and GT (uint8 BGR)."""
    import cv2

    def show(x: np.ndarray) -> np.ndarray:
        unit = np.clip((x + 1) / 2 if x.min() < 0 else x, 0, 1)
        rgb = np.repeat(unit, 3, axis=0) if unit.shape[0] == 1 else unit
        image = (rgb.transpose(1, 2, 0)[..., ::-1] * 255).round().astype(np.uint8)
        return cv2.resize(image, (tile, tile), interpolation=cv2.INTER_NEAREST)

    lines = [np.hstack([show(test["a"][i]), show(fakes[i]), show(test["a_gt"][i])]) for i in range(min(rows, len(fakes)))]
    return np.vstack(lines)
