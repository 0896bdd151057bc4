"""Models the server runs: U-Net segmentation artifacts, detector plugins and the built-in detector.

Models load only from the server's models directory (never from the data root, where uploads
go). A model is named by its ``id``: ``builtin:contours``, or a folder relative to the models
directory holding either a microforge artifact (``model.json``) or a plugin (``model.py``).

Detections are dicts ``{x, y, w, h, angle, confidence, class}``: centre ``(x, y)`` in pixels,
``w`` the side along ``angle``, ``h`` the other side, ``angle`` in radians in [-pi/2, pi/2).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from microforge.datasets.obb import normalise_angle
from microforge.platform.artifact import CARD_FILE
from microforge.platform.errors import MicroforgeError

from .images import to_gray_float, to_uint8
from .paths import NotFound, relative_to_root, resolve_inside

log = logging.getLogger(__name__)

BUILTIN_ID = "builtin:contours"
PLUGIN_FILE = "model.py"
# Architectures (registry names) whose artifacts output a foreground probability map; the same
# names as trainers.unet.evaluate.UNET_ARCHITECTURES, not imported so the ingress never loads torch.
SEGMENTATION_ARCHITECTURES = ("attention_unet",)
_SCAN_DEPTH = 3


class ModelError(MicroforgeError):
    """A model cannot be found, loaded or run; ``status`` is the HTTP code to answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


# --- discovery -----------------------------------------------------------------------------------

def _card_architecture(folder: Path) -> str | None:
    import json

    try:
        return str(json.loads((folder / CARD_FILE).read_text())["architecture"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_folder(models_dir: Path, folder: Path) -> dict[str, Any] | None:
    """``{id, name, type, folder}`` for a model folder, or None if it holds no model."""
    rel = relative_to_root(models_dir, folder)
    if (folder / CARD_FILE).is_file():
        arch = _card_architecture(folder)
        if arch not in SEGMENTATION_ARCHITECTURES:
            return None  # generators and other artifacts are not served here
        return {"id": rel, "name": folder.name, "type": "segmentation", "folder": rel, "architecture": arch}
    if (folder / PLUGIN_FILE).is_file():
        return {"id": rel, "name": folder.name, "type": "plugin", "folder": rel}
    return None


def list_models(models_dir: str | Path) -> list[dict[str, Any]]:
    """The built-in detector, then every artifact and plugin folder (up to 3 levels deep), by id.

    Symlinked folders are followed only while they stay inside ``models_dir``.
    """
    root = Path(models_dir).resolve()
    found = [{"id": BUILTIN_ID, "name": "Contours + minimum-area rectangles", "type": "builtin", "folder": ""}]
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        for child in children:
            real = child.resolve()
            if real != root and root not in real.parents:
                continue
            info = describe_folder(root, real)
            if info is not None:
                found.append(info)
            elif depth + 1 < _SCAN_DEPTH:
                stack.append((real, depth + 1))
    return [found[0], *sorted(found[1:], key=lambda m: m["id"])]


def resolve_model_folder(models_dir: str | Path, model_id: str) -> tuple[Path, dict[str, Any]]:
    """The folder of ``model_id`` inside ``models_dir`` and its description.

    Raises:
        PathRejected: the id escapes the models directory.
        NotFound / ModelError: nothing is there, or the folder holds no servable model.
    """
    folder = resolve_inside(models_dir, model_id, what="model folder", must_exist=True)
    if not folder.is_dir():
        raise NotFound(f"model folder '{model_id}' is not a directory")
    info = describe_folder(Path(models_dir).resolve(), folder)
    if info is None:
        raise ModelError(f"model folder '{model_id}' holds neither a U-Net artifact ({CARD_FILE}) "
                         f"nor a detector plugin ({PLUGIN_FILE})")
    return folder, info


def newest_segmentation_model(models_dir: str | Path) -> str | None:
    """The id of the most recently written segmentation artifact, or None."""
    root = Path(models_dir).resolve()
    candidates = [m for m in list_models(root) if m["type"] == "segmentation"]
    if not candidates:
        return None
    return max(candidates, key=lambda m: (root / m["folder"] / CARD_FILE).stat().st_mtime)["id"]


# --- segmentation --------------------------------------------------------------------------------

@dataclass
class SegmentationNet:
    """A U-Net artifact ready to predict foreground probabilities."""

    model_id: str
    module: Any
    preprocessing: dict[str, Any]
    metrics: dict[str, Any]

    device: str = "cpu"

    @property
    def threshold(self) -> float:
        """Probability at or above which a pixel is foreground (the card's threshold is on logits)."""
        return 1.0 / (1.0 + math.exp(-float(self.preprocessing.get("threshold", 0.0))))

    @property
    def info(self) -> dict[str, Any]:
        return {"id": self.model_id, "type": "segmentation", "architecture": self.module.__class__.__name__,
                "config": getattr(self.module, "config", {}), "metrics": self.metrics, "device": self.device,
                "image_size": self.preprocessing.get("image_size"), "threshold": self.threshold}

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Probabilities (float32 (H, W) in [0, 1]) for gray (H, W) images: float32 in [0, 1] (the
        value range the trainer's preprocessing records) or uint8, which is scaled by 1/255 on the
        device.

        Images of the same shape run as one batch; each is edge-padded to the network's size
        multiple and the output cropped back.
        """
        import torch

        multiple = int(getattr(self.module, "size_multiple", 1))
        out: list[np.ndarray | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for (h, w), indices in by_shape.items():
            ph, pw = -h % multiple, -w % multiple
            group = [images[i] for i in indices]
            all_u8 = all(image.dtype == np.uint8 for image in group)
            if not all_u8:  # a mixed batch is scaled here; an all-uint8 one on the device
                group = [image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image for image in group]
            batch = np.stack([np.pad(image, ((0, ph), (0, pw)), mode="edge") for image in group])
            x = torch.from_numpy(batch).unsqueeze(1).to(self.device)
            x = x.float() / 255.0 if all_u8 else x.float()
            with torch.inference_mode():
                probs = torch.sigmoid(self.module(x))[:, 0, :h, :w].cpu().numpy()
            for i, prob in zip(indices, probs):
                out[i] = prob.astype(np.float32)
        return out  # type: ignore[return-value]


def segmentation_outputs(prob: np.ndarray, threshold: float, with_prob: bool) -> dict[str, Any]:
    """What a prediction returns to the ingress: the binary mask (uint8 0/255), the probability
    map quantised to uint8 if asked (what its PNG shows anyway), and statistics from the full
    float map: a quarter of the bytes of the float map, and the map only when a route needs it."""
    mask = prob >= threshold
    return {"mask": mask.astype(np.uint8) * 255,
            "prob": np.clip(np.round(prob * 255.0), 0, 255).astype(np.uint8) if with_prob else None,
            "stats": {"height": int(prob.shape[0]), "width": int(prob.shape[1]),
                      "foreground_fraction": float(mask.mean()), "mean_prob": float(prob.mean()),
                      "max_prob": float(prob.max())}}


def load_segmentation(models_dir: str | Path, model_id: str) -> SegmentationNet:
    """Load a U-Net artifact from the models directory.

    Raises:
        ModelError: the folder is not a segmentation artifact or does not load.
    """
    from microforge.platform.artifact import ArtifactError, read_artifact
    from microforge.trainers.registry import build_model

    folder, info = resolve_model_folder(models_dir, model_id)
    if info["type"] != "segmentation":
        raise ModelError(f"model '{model_id}' is a {info['type']}, not a segmentation artifact")
    import torch

    try:
        card, state = read_artifact(folder)
        module = build_model(card, state)
    except ArtifactError as exc:
        raise ModelError(str(exc)) from None
    # A replica sees a GPU only when its ray_actor_options reserve one.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return SegmentationNet(model_id, module.to(device), dict(card.preprocessing), dict(card.metrics), device)


# --- detection -----------------------------------------------------------------------------------

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

    return Detector({"id": model_id, "type": "plugin", "name": folder.name}, run)


def load_detector(models_dir: str | Path, model_id: str) -> Detector:
    """The detector named ``model_id`` (built-in, plugin folder or U-Net artifact).

    Raises:
        PathRejected, NotFound, ModelError: see :func:`resolve_model_folder`; a plugin that fails to import.
    """
    if model_id == BUILTIN_ID:
        return Detector({"id": BUILTIN_ID, "type": "builtin", "name": "contours"}, detect_contours)
    folder, info = resolve_model_folder(models_dir, model_id)
    if info["type"] == "plugin":
        return _load_plugin(folder, model_id)
    net = load_segmentation(models_dir, model_id)

    def run(image: np.ndarray) -> list[dict[str, Any]]:
        prob = net.predict([to_gray_float(image)])[0]
        return boxes_from_mask(prob >= net.threshold)

    return Detector(net.info, run)

