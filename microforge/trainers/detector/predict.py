"""Run a crystal detector on whole images of any size, the same way in validation, eval and Serve.

The image is first resized by the artifact's ``input_scale`` (:func:`recorded_scale`: the factor
its training images were resized by), and the boxes found are mapped back to the input's pixels.
An image up to ``tile`` pixels a side (after that resize) runs in one pass (edge-padded to the
network's size multiple). A larger one (the ``standard`` preset is 2878 x 2048) runs as
overlapping windows of ``tile`` px, ``overlap`` px apart at their seams: each window keeps the
detections whose centre lies in its own share of the overlap (the half nearer its middle), so a
rod cut by one window's edge is taken from the window that sees it whole, then one rotated NMS
runs over the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from microforge.datasets.rotated import rotated_nms
from microforge.platform.errors import ConfigError

from .targets import COUNT_SCORE, DecodeSettings, check_scale, decode_maps, rescale, scale_boxes

if TYPE_CHECKING:
    import torch

    from microforge.platform.transforms import Transform

__all__ = ["Detections", "TilingSettings", "detect_image", "detections_as_dicts", "forward_maps",
           "recorded_count_score", "recorded_scale"]


@dataclass(frozen=True)
class TilingSettings:
    """``tile``: the largest side run in one pass; ``overlap``: pixels shared by neighbouring
    windows (at least the longest rod expected, so every rod lies whole in some window)."""

    tile: int = 1024
    overlap: int = 384

    def __post_init__(self) -> None:
        if self.tile < 32 or not 0 <= self.overlap < self.tile // 2:
            raise ConfigError(f"tiling needs tile >= 32 and 0 <= overlap < tile / 2, got {self.tile}, {self.overlap}")


@dataclass(frozen=True)
class Detections:
    """Boxes ``(N, 5)`` ``cx, cy, length, width, angle`` in image pixels and scores ``(N,)``."""

    boxes: np.ndarray
    scores: np.ndarray


def recorded_scale(preprocessing: dict[str, Any] | None) -> float:
    """The factor a detector artifact's inputs are resized by (1.0 when it records none)."""
    return float((preprocessing or {}).get("input_scale") or 1.0)


def recorded_count_score(preprocessing: dict[str, Any] | None) -> float:
    """The score at which a detector artifact's detections count as rods (chosen on validation;
    :data:`~.targets.COUNT_SCORE` when it records none)."""
    recorded = (preprocessing or {}).get("count_score")
    return COUNT_SCORE if recorded is None else float(recorded)


def forward_maps(model: "torch.nn.Module", images: "torch.Tensor") -> dict[str, np.ndarray]:
    """The model's maps for ``(B, 1, H, W)`` images: heatmap as probabilities, numpy on the CPU."""
    import torch

    with torch.no_grad():
        out = model(images)
    maps = {k: v.float().cpu().numpy() for k, v in out.items()}
    maps["heatmap"] = 1.0 / (1.0 + np.exp(-maps["heatmap"]))
    return maps


def _window_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def _run(model: "torch.nn.Module", window: np.ndarray, settings: DecodeSettings) -> Detections:
    import torch

    multiple = int(getattr(model, "size_multiple", 1))
    h, w = window.shape
    ph, pw = -h % multiple, -w % multiple
    padded = np.pad(window, ((0, ph), (0, pw)), mode="edge") if ph or pw else window
    device = next(model.parameters()).device
    maps = forward_maps(model, torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(device))
    boxes, scores = decode_maps(maps["heatmap"][0], maps["size"][0], maps["angle"][0], maps["offset"][0],
                                int(getattr(model, "stride", 4)), settings, end_distance=maps["end_distance"][0])
    inside = (boxes[:, 0] < w) & (boxes[:, 1] < h)
    return Detections(boxes[inside], scores[inside])


def detect_image(model: "torch.nn.Module", image: np.ndarray, *, transform: "Transform | None" = None,
                 decode: DecodeSettings = DecodeSettings(), tiling: TilingSettings = TilingSettings(),
                 scale: float = 1.0) -> Detections:
    """Detect the rods of one gray ``(H, W)`` (or BGR) image; boxes in its pixels.

    Args:
        transform: the artifact's input transform (None: ``unit_range``).
        scale: the factor the image is resized by before the network (:func:`recorded_scale`).

    Raises:
        ConfigError: an empty image, a scale out of range, or a dtype / range the transform rejects.
    """
    import cv2

    from microforge.platform.transforms import transform_from_spec

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = cv2.cvtColor(array[..., :3], cv2.COLOR_BGR2GRAY)
    if array.ndim != 2 or 0 in array.shape:
        raise ConfigError(f"detection takes a gray (H, W) or BGR (H, W, 3) image, got shape {np.shape(image)}")
    check_scale(scale, "detection scale")
    x = np.asarray((transform or transform_from_spec(None)).apply(array), dtype=np.float32)
    found = _detect_tiled(model, rescale(x, np.zeros((0, 5)), scale)[0], decode, tiling)
    return Detections(scale_boxes(found.boxes, 1.0 / scale), found.scores)


def _detect_tiled(model: "torch.nn.Module", x: np.ndarray, decode: DecodeSettings,
                  tiling: TilingSettings) -> Detections:
    h, w = x.shape
    if h <= tiling.tile and w <= tiling.tile:
        return _run(model, x, decode)
    half = tiling.overlap / 2
    all_boxes, all_scores = [], []
    ys, xs = _window_starts(h, tiling.tile, tiling.overlap), _window_starts(w, tiling.tile, tiling.overlap)
    for y0 in ys:
        for x0 in xs:
            found = _run(model, x[y0:y0 + tiling.tile, x0:x0 + tiling.tile], decode)
            cx, cy = found.boxes[:, 0] + x0, found.boxes[:, 1] + y0
            # This window's share: its interior, up to halfway into each overlap with a neighbour.
            lo_x = x0 + half if x0 > 0 else -np.inf
            hi_x = x0 + tiling.tile - half if x0 < xs[-1] else np.inf
            lo_y = y0 + half if y0 > 0 else -np.inf
            hi_y = y0 + tiling.tile - half if y0 < ys[-1] else np.inf
            keep = (cx >= lo_x) & (cx < hi_x) & (cy >= lo_y) & (cy < hi_y)
            boxes = found.boxes[keep].copy()
            boxes[:, 0] += x0
            boxes[:, 1] += y0
            all_boxes.append(boxes)
            all_scores.append(found.scores[keep])
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    keep = rotated_nms(boxes, scores, decode.nms_iou)[:decode.max_detections]
    return Detections(boxes[keep], scores[keep])


def detections_as_dicts(found: Detections, class_name: str = "Crystal") -> list[dict[str, Any]]:
    """Serve's detection records ``{x, y, w, h, angle, confidence, class}`` (``w``: the length)."""
    return [{"x": float(b[0]), "y": float(b[1]), "w": float(b[2]), "h": float(b[3]), "angle": float(b[4]),
             "confidence": float(s), "class": class_name} for b, s in zip(found.boxes, found.scores)]
