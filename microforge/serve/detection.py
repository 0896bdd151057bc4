"""Oriented-box detection: trained detector artifacts (task ``detect``, e.g. the ``crystals``
workload), the built-in contour detector, plugin folders, and segmentation artifacts (boxes
around the mask's regions).

A detector artifact runs :func:`microforge.trainers.detector.predict.detect_image` (tiled for
large images) with its card's transform, exactly as ``microforge eval crystals`` does.

Detections are dicts ``{x, y, w, h, angle, confidence, class}``: centre ``(x, y)`` in pixels,
``w`` the side along ``angle``, ``h`` the other side, ``angle`` in radians in [-pi/2, pi/2).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from microforge.datasets.obb import normalise_angle

from .discovery import BUILTIN_ID, PLUGIN_FILE, ModelError, ServedArtifact, load_served_artifact, newest_model, \
    resolve_model_folder
from .images import to_gray, to_uint8


def boxes_from_mask(mask: np.ndarray, min_area: float = 12.0) -> list[dict[str, Any]]:
    """Oriented boxes of the connected regions of a binary mask (minimum-area rectangles)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    detections = []
    for contour in contours:
        area = cv2.contourArea(contour)
        if area < min_area:
            continue
        rect = cv2.minAreaRect(contour)
        corners = cv2.boxPoints(rect)
        edge_a, edge_b = corners[1] - corners[0], corners[2] - corners[1]
        # The angle follows the long side, whatever OpenCV's own angle convention.
        long_edge = edge_a if np.hypot(*edge_a) >= np.hypot(*edge_b) else edge_b
        length, width = max(rect[1]), min(rect[1])
        detections.append({
            "x": float(rect[0][0]), "y": float(rect[0][1]), "w": float(length), "h": float(width),
            "angle": float(normalise_angle(math.atan2(float(long_edge[1]), float(long_edge[0])))),
            "confidence": 1.0, "class": "Crystal",
        })
    return detections


def detect_contours(image: np.ndarray, min_area: float = 12.0) -> list[dict[str, Any]]:
    """The built-in detector: pixels that differ from the smooth background (dark or bright,
    as DIC rods are both), Otsu threshold, opening, then one box per connected region."""
    gray = to_uint8(image)
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
    background = cv2.GaussianBlur(gray, (0, 0), 15)
    deviation = cv2.GaussianBlur(cv2.absdiff(gray, background), (3, 3), 0)
    if int(deviation.max()) < 4:  # a flat image has nothing to find; Otsu would split its noise
        return []
    _, mask = cv2.threshold(deviation, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return boxes_from_mask(mask, min_area)


def _number(value: Any, key: str, origin: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)):
        raise ModelError(f"{origin} returned a detection whose '{key}' is not a finite number: {value!r}", 500)
    return float(value)


def normalise_detections(raw: Any, origin: str, limit: int = 100_000) -> list[dict[str, Any]]:
    """Check a detector's output and bring it to the canonical form (floats, radians, class)."""
    if not isinstance(raw, (list, tuple)):
        raise ModelError(f"{origin} must return a list of detections, got {type(raw).__name__}", 500)
    if len(raw) > limit:
        raise ModelError(f"{origin} returned {len(raw)} detections (more than {limit})", 500)
    out = []
    for det in raw:
        if not isinstance(det, dict):
            raise ModelError(f"{origin} returned a detection that is not a dict: {det!r:.80}", 500)
        missing = [k for k in ("x", "y", "w", "h", "angle") if k not in det]
        if missing:
            raise ModelError(f"{origin} returned a detection without {', '.join(missing)}", 500)
        item = {k: _number(det[k], k, origin) for k in ("x", "y", "w", "h")}
        if item["w"] < 0 or item["h"] < 0:
            raise ModelError(f"{origin} returned a negative box size", 500)
        item["angle"] = normalise_angle(_number(det["angle"], "angle", origin))
        item["confidence"] = _number(det.get("confidence", 1.0), "confidence", origin)
        item["class"] = str(det.get("class", "object"))[:64]
        out.append(item)
    return out


@dataclass
class Detector:
    """A loaded detector: ``infer(image) -> detections`` plus a description for ``model_info``."""

    info: dict[str, Any]
    infer: Callable[[np.ndarray], list[dict[str, Any]]]
    extra: dict[str, Any] = field(default_factory=dict)


def _load_plugin(folder: Path, model_id: str) -> Detector:
    """Import ``model.py`` of a plugin folder under a private module name and run its ``load()``."""
    path = folder / PLUGIN_FILE
    module_name = "microforge_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"plugin '{model_id}': cannot import {PLUGIN_FILE}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        infer = getattr(module, "infer", None)
        if not callable(infer):
            raise ModelError(f"plugin '{model_id}': {PLUGIN_FILE} defines no infer(model, image) function")
        state = module.load() if callable(getattr(module, "load", None)) else None
    except ModelError:
        raise
    except Exception as exc:  # the plugin's own code failed; report it, not a traceback
        raise ModelError(f"plugin '{model_id}' failed to load: {type(exc).__name__}: {exc}", 500) from None

    def run(image: np.ndarray) -> list[dict[str, Any]]:
        try:
            raw = infer(state, image)
        except Exception as exc:
            raise ModelError(f"plugin '{model_id}' failed: {type(exc).__name__}: {exc}", 500) from None
        return normalise_detections(raw, f"plugin '{model_id}'")

    return Detector({"id": model_id, "type": "plugin", "task": "detect", "name": folder.name}, run)


def default_detector(models_dir: str | Path | None, configured: str | None = None) -> str:
    """The detector a server selects at start: ``configured`` (``default_models.detect``), else
    the newest detector artifact in ``models_dir``, else the built-in contour detector."""
    if configured:
        return configured
    if models_dir is None:
        return BUILTIN_ID
    try:
        return newest_model(models_dir, "detect") or BUILTIN_ID
    except OSError:
        return BUILTIN_ID


def _load_artifact_detector(models_dir: str | Path, model_id: str) -> Detector:
    """A trained oriented-box detector artifact (task ``detect``)."""
    import torch

    from microforge.trainers.detector.predict import (detect_image, detections_as_dicts, recorded_count_score,
                                                      recorded_scale)
    from microforge.trainers.detector.targets import DecodeSettings

    artifact, device = load_served_artifact(models_dir, model_id, "detect")
    served = ServedArtifact(model_id, artifact, device)
    module = served.component("model")
    module.eval()
    info = served.describe(module, "detector", "detect")
    scale = recorded_scale(artifact.preprocessing)
    # Serve reports rods, as eval counts them: the detections scoring the recorded count score.
    decode = DecodeSettings(score_threshold=recorded_count_score(artifact.preprocessing))

    def run(image: np.ndarray) -> list[dict[str, Any]]:
        with torch.inference_mode():
            found = detect_image(module, image, transform=artifact.transform, scale=scale, decode=decode)
        return detections_as_dicts(found)

    return Detector(info, run)


def load_detector(models_dir: str | Path, model_id: str) -> Detector:
    """The detector named ``model_id`` (built-in, plugin folder, detector or segmentation artifact).

    Raises:
        PathRejected, NotFound, ModelError: see :func:`~microforge.serve.discovery.resolve_model_folder`;
            a plugin that fails to import, a model that is no detector.
    """
    if model_id == BUILTIN_ID:
        return Detector({"id": BUILTIN_ID, "type": "builtin", "task": "detect", "name": "contours"}, detect_contours)
    folder, info = resolve_model_folder(models_dir, model_id)
    if info["type"] == "plugin":
        return _load_plugin(folder, model_id)
    if info["task"] == "detect":
        return _load_artifact_detector(models_dir, model_id)
    if info["task"] != "segment":
        raise ModelError(f"model '{model_id}' is a {info['type']} ({info['task']}) model, not a detector")
    from .segmentation import load_segmentation

    net = load_segmentation(models_dir, model_id)

    def run(image: np.ndarray) -> list[dict[str, Any]]:
        prob = net.predict([to_gray(image)])[0]
        return boxes_from_mask(prob > net.threshold)

    return Detector(net.info, run)
