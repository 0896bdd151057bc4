"""The analyze report: PNG plots drawn with OpenCV (always installed) and ``report.html``.

matplotlib is not a dependency of microforge, so the plots are plain OpenCV drawings: axes with
ticks, lines, bars and points, deterministic for the same statistics.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...platform.storage import atomic_write_bytes, atomic_write_text
from ..images import encode_image
from .stats import STATISTICS

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 80, 20, 36, 56
_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
            (194, 119, 227), (127, 127, 127)]  # BGR


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45) -> None:
    import cv2

    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def _axes(title: str, xlabel: str, ylabel: str, xlim: tuple[float, float], ylim: tuple[float, float]
          ) -> tuple[np.ndarray, Callable[[float, float], tuple[int, int]]]:
    """A white canvas with framed axes and 5 ticks each; ``to_px(x, y)`` maps data to pixels."""
    import cv2

    canvas = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    x0, x1 = xlim
    y0, y1 = ylim if ylim[1] > ylim[0] else (ylim[0], ylim[0] + 1)
    x1 = x1 if x1 > x0 else x0 + 1

    def to_px(x: float, y: float) -> tuple[int, int]:
        px = LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)
        py = HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)
        return int(round(px)), int(round(py))

    cv2.rectangle(canvas, (LEFT, TOP), (WIDTH - RIGHT, HEIGHT - BOTTOM), (0, 0, 0), 1)
    for t in np.linspace(0, 1, 5):
        xv, yv = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        px, _ = to_px(xv, y0)
        _, py = to_px(x0, yv)
        cv2.line(canvas, (px, HEIGHT - BOTTOM), (px, HEIGHT - BOTTOM + 5), (0, 0, 0), 1)
        cv2.line(canvas, (LEFT - 5, py), (LEFT, py), (0, 0, 0), 1)
        _text(canvas, f"{xv:.3g}", (px - 14, HEIGHT - BOTTOM + 20), 0.4)
        _text(canvas, f"{yv:.3g}", (8, py + 4), 0.4)
    _text(canvas, title, (LEFT, 24), 0.55)
    _text(canvas, xlabel, (WIDTH // 2 - 40, HEIGHT - 12))
    _text(canvas, ylabel, (8, TOP - 8), 0.4)
    return canvas, to_px


def histogram_plot(total: np.ndarray, per_image: list[np.ndarray]) -> np.ndarray:
    """Intensity histograms on a log axis: each of ``per_image`` thin, the total thick."""
    import cv2

    bins = len(total)
    centres = (np.arange(bins) + 0.5) / bins
    top = float(np.log10(total.max() + 1)) if total.size else 1.0
    canvas, to_px = _axes("intensity histogram (all images thick)", "intensity (fraction of range)",
                          "log10(count + 1)", (0.0, 1.0), (0.0, top))
    for i, counts in enumerate(per_image):
        points = np.array([to_px(x, y) for x, y in zip(centres, np.log10(counts + 1.0))], np.int32)
        cv2.polylines(canvas, [points], False, _COLOURS[i % len(_COLOURS)], 1, cv2.LINE_AA)
    points = np.array([to_px(x, y) for x, y in zip(centres, np.log10(total + 1.0))], np.int32)
    cv2.polylines(canvas, [points], False, (0, 0, 0), 2, cv2.LINE_AA)
    return canvas


def sparsity_plot(values: np.ndarray, bins: int = 20) -> np.ndarray:
    """A bar histogram of the images' bright-pixel fractions."""
    import cv2

    hi = max(float(values.max()), 1e-3)
    counts, edges = np.histogram(values, bins, (0.0, hi))
    canvas, to_px = _axes("sparsity (bright-pixel fraction) per image", "bright fraction", "images",
                          (0.0, hi), (0.0, float(counts.max())))
    for count, a, b in zip(counts, edges[:-1], edges[1:]):
        if count:
            cv2.rectangle(canvas, to_px(a, count), to_px(b, 0), _COLOURS[0], -1)
            cv2.rectangle(canvas, to_px(a, count), to_px(b, 0), (0, 0, 0), 1)
    return canvas


def scatter_plot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sharpness (log10 Laplacian variance) against the noise estimate, one point per image."""
    import cv2

    ly = np.log10(np.maximum(y, 1e-12))
    pad_x, pad_y = (np.ptp(x) or 1e-3) * 0.05, (np.ptp(ly) or 1.0) * 0.05
    canvas, to_px = _axes("sharpness vs noise", "noise sigma (fraction of range)", "log10 sharpness",
                          (float(x.min() - pad_x), float(x.max() + pad_x)),
                          (float(ly.min() - pad_y), float(ly.max() + pad_y)))
    for xv, yv in zip(x, ly):
        cv2.circle(canvas, to_px(xv, yv), 4, _COLOURS[1], -1, cv2.LINE_AA)
    return canvas


def sample_grid(thumbnails: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Thumbnails in rows of ``columns`` with a 4-pixel white gutter."""
    size = thumbnails[0].shape[0]
    rows = -(-len(thumbnails) // columns)
    grid = np.full((rows * (size + 4) + 4, columns * (size + 4) + 4), 255, np.uint8)
    for i, thumb in enumerate(thumbnails):
        r, c = divmod(i, columns)
        grid[4 + r * (size + 4):4 + r * (size + 4) + size, 4 + c * (size + 4):4 + c * (size + 4) + size] = thumb
    return grid


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out: Path, stats: dict[str, Any], histograms: list[np.ndarray],
                 thumbnails: list[np.ndarray]) -> None:
    """``stats.json``, ``plots/*.png`` and ``report.html`` into the directory ``out``."""
    per_image = stats["per_image"]
    plots = {
        "histogram": histogram_plot(np.asarray(stats["histogram"]["counts"], np.float64),
                                    [h.astype(np.float64) for h in histograms]),
        "sparsity": sparsity_plot(np.array([r["sparsity"] for r in per_image])),
        "sharpness_noise": scatter_plot(np.array([r["noise"] for r in per_image]),
                                        np.array([r["sharpness"] for r in per_image])),
    }
    if thumbnails:
        plots["samples"] = sample_grid(thumbnails)
    for name, image in plots.items():
        atomic_write_bytes(out / "plots" / f"{name}.png", encode_image(image, ".png"))
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, sort_keys=True) + "\n")
    aggregate = [[name, *stats["aggregate"][name].values()] for name in STATISTICS]
    columns = ["image", "dtype", "height", "width", *STATISTICS]
    errors = "".join(f"<li>{html.escape(e['image'])}: {html.escape(e['error'])}</li>" for e in stats["errors"])
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>microforge analyze: {html.escape(stats['dataset'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{margin:4px;border:1px solid #ddd}}</style>
</head><body>
<h1>{html.escape(stats['dataset'])}</h1>
<p>{stats['images']} images analysed, {len(stats['errors'])} unreadable. Statistics in float on the full
bit depth (intensities as a fraction of the dtype's range).</p>
<h2>Aggregate</h2>{_table(["statistic", "mean", "std", "min", "median", "max"], aggregate)}
<h2>Plots</h2>{"".join(f'<img src="plots/{name}.png" alt="{name}">' for name in plots)}
{f"<h2>Unreadable images</h2><ul>{errors}</ul>" if errors else ""}
<h2>Per image</h2>{_table(columns, [[r[c] for c in columns] for r in per_image])}
</body></html>
"""
    atomic_write_text(out / "report.html", page)
