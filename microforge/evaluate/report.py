"""The ``eval images`` report directory: ``report.json``, ``samples.png`` (real and fake samples
side by side) and ``histograms.png`` (overlaid real/fake histograms of pixel intensity and of every
statistic), drawn with OpenCV. Pictures are stretched to 8 bits for display only; every number in
the report comes from the full bit depth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datasets.manifest import decode_image
from ..platform.storage import atomic_replace_dir
from .images import to_float
from .texture import stretch

__all__ = ["INTENSITY_EDGES", "intensity_histogram", "write_report"]

# Pixel intensities in [0, 1] on a log axis: [0, 1e-5) then 127 log-spaced bins up to 1 (a dim
# 16-bit image spreads over these bins; its 8-bit copy piles up in the first).
INTENSITY_EDGES = np.concatenate([[0.0], np.geomspace(1e-5, 1.0, 128)])
INTENSITY_EDGES[-1] = 1.0 + 1e-9
REAL_COLOUR, FAKE_COLOUR = (200, 120, 30), (40, 110, 240)  # BGR: blue, orange
TILE, PANEL = 128, (180, 260)
SAMPLES = 8


def intensity_histogram(x: np.ndarray) -> np.ndarray:
    """Pixel counts of a float image in :data:`INTENSITY_EDGES` bins."""
    return np.histogram(np.clip(x, 0.0, 1.0), bins=INTENSITY_EDGES)[0].astype(np.float64)


def _tile(path: Path) -> np.ndarray:
    import cv2

    x = to_float(decode_image(path))
    planes = [stretch(c) for c in (x if x.shape[0] == 3 else x.mean(axis=0, keepdims=True))]
    image = (np.stack(planes, axis=-1) * 255).round().astype(np.uint8)  # display only
    image = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def _grid(paths: Sequence[Path], label: str) -> np.ndarray:
    import cv2

    tiles = [_tile(p) for p in paths[:SAMPLES]]
    tiles += [np.full((TILE, TILE, 3), 255, np.uint8)] * (SAMPLES - len(tiles))
    rows = [np.hstack(tiles[i:i + 4]) for i in range(0, SAMPLES, 4)]
    header = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    cv2.putText(header, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([header, *rows])


def _samples(sets: Sequence[Any]) -> np.ndarray:
    real, fake = (_grid(s.paths, f"{role}: {s.name} ({len(s.paths)} images)")
                  for s, role in zip(sets, ("REAL", "FAKE")))
    gap = np.full((real.shape[0], 12, 3), 255, np.uint8)
    return np.hstack([real, gap, fake])


def _panel(title: str, real: np.ndarray, fake: np.ndarray, *, log_counts: bool = False) -> np.ndarray:
    """Two histograms (already binned, same bins) overlaid as outlines on one panel."""
    import cv2

    h, w = PANEL
    panel = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(panel, title[:34], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    top, bottom, left, right = 22, h - 6, 4, w - 4
    cv2.rectangle(panel, (left, top), (right, bottom), (200, 200, 200), 1)
    densities = []
    for counts in (real, fake):
        d = counts / counts.sum() if counts.sum() > 0 else counts
        densities.append(np.log10(1 + 1e4 * d) if log_counts else d)
    peak = max(float(max(d.max() for d in densities)), 1e-12)
    bins = len(real)
    for d, colour in zip(densities, (REAL_COLOUR, FAKE_COLOUR)):
        points = []
        for i, v in enumerate(d):
            y = int(round(bottom - (bottom - top - 2) * v / peak))
            x0 = left + int((right - left) * i / bins)
            x1 = left + int((right - left) * (i + 1) / bins)
            points += [(x0, y), (x1, y)]
        cv2.polylines(panel, [np.array(points, np.int32)], False, colour, 1, cv2.LINE_AA)
    return panel


def _histograms(values: Sequence[dict[str, np.ndarray]], intensity: Sequence[np.ndarray]) -> np.ndarray:
    import cv2

    panels = [_panel("pixel intensity (log x, log y)", *intensity, log_counts=True)]
    for name in values[0]:
        a, b = (np.asarray(v[name], np.float64) for v in values)
        both = np.concatenate([a, b])
        lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 25)
        panels.append(_panel(name, np.histogram(a, edges)[0].astype(float), np.histogram(b, edges)[0].astype(float)))
    legend = np.full(PANEL + (3,), 255, np.uint8)
    for k, (text, colour) in enumerate((("REAL", REAL_COLOUR), ("FAKE", FAKE_COLOUR))):
        cv2.line(legend, (10, 40 + 30 * k), (50, 40 + 30 * k), colour, 3)
        cv2.putText(legend, text, (60, 45 + 30 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    panels.append(legend)
    panels += [np.full(PANEL + (3,), 255, np.uint8)] * (-len(panels) % 4)
    return np.vstack([np.hstack(panels[i:i + 4]) for i in range(0, len(panels), 4)])


def write_report(out: Path, report: dict[str, Any], sets: Sequence[Any], values: Sequence[dict[str, np.ndarray]],
                 intensity: Sequence[np.ndarray]) -> Path:
    """Write the report directory ``out`` atomically (see the module doc)."""
    import cv2

    samples, histograms = _samples(sets), _histograms(values, intensity)

    def fill(tmp: Path) -> None:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        for name, image in (("samples.png", samples), ("histograms.png", histograms)):
            ok, data = cv2.imencode(".png", image)
            if not ok:
                raise OSError(f"OpenCV could not encode {name}")
            (tmp / name).write_bytes(data.tobytes())

    return atomic_replace_dir(out, fill)
