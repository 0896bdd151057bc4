"""Image I/O for the API: validated decoding, PNG/JPEG data URLs, preprocessing and overlays.

Everything here is plain numpy/OpenCV and CPU-bound: the ingress calls it from worker threads,
never on its event loop.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np
from pydantic import Field, StrictBool

from microforge.platform.config import ConfigModel
from microforge.platform.errors import MicroforgeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".tif": "image/tiff",
               ".tiff": "image/tiff", ".bmp": "image/bmp"}


class ImageRejected(MicroforgeError):
    """Uploaded content is not an acceptable image; ``status`` is 413, 415 or 422."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def check_dimensions(width: int, height: int, max_side: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageRejected(f"image has no pixels ({width}x{height})", 422)
    if max(width, height) > max_side or width * height > max_pixels:
        raise ImageRejected(f"image is {width}x{height}; the server accepts at most {max_side} px per side "
                            f"and {max_pixels} pixels", 413)


_PIL_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp"}


def probe_image(data: bytes, *, max_side: int, max_pixels: int) -> tuple[int, int, str]:
    """``(width, height, suffix)`` from the header alone (Pillow reads it lazily), so an
    oversized image is refused before its pixels are decompressed.

    Raises:
        ImageRejected: 415 not a PNG/JPEG/TIFF/BMP image, 413 too large, 422 empty or unreadable header.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageRejected("the file is empty", 422)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            kind = probe.format
    except UnidentifiedImageError:
        raise ImageRejected("the file is not an image (PNG, JPEG, TIFF or BMP expected)", 415) from None
    except Exception as exc:  # Pillow raises assorted errors on truncated headers
        raise ImageRejected(f"the image header cannot be read ({type(exc).__name__})", 422) from None
    if kind not in _PIL_SUFFIXES:
        raise ImageRejected(f"{kind} images are not accepted (PNG, JPEG, TIFF or BMP expected)", 415)
    check_dimensions(width, height, max_side, max_pixels)
    return width, height, _PIL_SUFFIXES[kind]


def decode_image(data: bytes, *, max_side: int, max_pixels: int) -> np.ndarray:
    """Decode uploaded bytes into a uint8 or uint16 (H, W) or (H, W, 3) BGR array.

    Raises:
        ImageRejected: as :func:`probe_image`, or 422 when the pixels cannot be decoded.
    """
    probe_image(data, max_side=max_side, max_pixels=max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageRejected("the image cannot be decoded (corrupt or unsupported encoding)", 422)
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageRejected(f"unsupported pixel type {image.dtype} (8- or 16-bit images expected)", 422)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageRejected(f"unsupported image shape {image.shape}", 422)
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """uint16 images are scaled by their maximum; uint8 pass through."""
    if image.dtype == np.uint8:
        return image
    peak = float(image.max()) or 1.0
    return np.clip(image.astype(np.float32) * (255.0 / peak), 0, 255).astype(np.uint8)


def to_bgr(image: np.ndarray) -> np.ndarray:
    image = to_uint8(image)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray (H, W) in the image's own dtype (uint8 or uint16): what the ingress sends to model
    replicas, whose artifact's transform scales it (no per-image rescaling here)."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def encode(image: np.ndarray, suffix: str = ".png", quality: int = 85) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise MicroforgeError(f"cannot encode a {image.dtype} {image.shape} image as {suffix}")
    return buf.tobytes()


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def png_b64(image: np.ndarray) -> str:
    """A PNG data URL."""
    return data_url(encode(image, ".png"), "image/png")


def jpeg_b64(image: np.ndarray, quality: int = 85) -> str:
    """A JPEG data URL."""
    return data_url(encode(image, ".jpg", quality), "image/jpeg")


# --- preprocessing -------------------------------------------------------------------------------

OPERATIONS = ("gray", "equalize", "clahe", "blur", "denoise", "gradient")


class PreprocPipeline(ConfigModel):
    """The preprocessing pipeline, applied in field order."""

    desaturate: float = Field(0.0, ge=0, le=1, description="Blend towards gray (1 = fully gray).")
    clahe_enable: StrictBool = Field(False, description="CLAHE on the L channel of LAB.")
    clahe_clip_limit: float = Field(2.0, gt=0, le=100, description="CLAHE contrast clip limit.")
    clahe_tile_grid: int = Field(8, ge=1, le=64, description="CLAHE tiles per side.")
    equalize: StrictBool = Field(False, description="Histogram equalisation of the L channel.")
    gradient_strength: float = Field(0.0, ge=0, le=1, description="Blend towards the Sobel gradient magnitude.")
    invert: StrictBool = Field(False, description="Invert intensities last.")


def apply_pipeline(image: np.ndarray, pipeline: PreprocPipeline) -> np.ndarray:
    """Apply ``pipeline`` to an image; returns uint8 BGR (H, W, 3)."""
    out = to_bgr(image)
    if pipeline.desaturate > 0:
        gray = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        out = cv2.addWeighted(out, 1.0 - pipeline.desaturate, gray, pipeline.desaturate, 0)
    if pipeline.clahe_enable or pipeline.equalize:
        lab = cv2.cvtColor(out, cv2.COLOR_BGR2LAB)
        lightness = lab[:, :, 0]
        if pipeline.clahe_enable:
            grid = pipeline.clahe_tile_grid
            lightness = cv2.createCLAHE(pipeline.clahe_clip_limit, (grid, grid)).apply(lightness)
        if pipeline.equalize:
            lightness = cv2.equalizeHist(lightness)
        lab[:, :, 0] = lightness
        out = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    if pipeline.gradient_strength > 0:
        gray = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).astype(np.float32)
        magnitude = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
        magnitude = cv2.normalize(magnitude, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        out = cv2.addWeighted(out, 1.0 - pipeline.gradient_strength, cv2.cvtColor(magnitude, cv2.COLOR_GRAY2BGR),
                              pipeline.gradient_strength, 0)
    if pipeline.invert:
        out = 255 - out
    return out


def apply_operation(image: np.ndarray, operation: str) -> np.ndarray:
    """One named operation of ``/preprocess``; returns uint8 gray or BGR."""
    bgr = to_bgr(image)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if operation == "gray":
        return gray
    if operation == "equalize":
        return cv2.equalizeHist(gray)
    if operation == "clahe":
        return cv2.createCLAHE(2.0, (8, 8)).apply(gray)
    if operation == "blur":
        return cv2.GaussianBlur(bgr, (5, 5), 0)
    if operation == "denoise":
        return cv2.fastNlMeansDenoising(gray, None, 10, 7, 21)
    if operation == "gradient":
        g = gray.astype(np.float32)
        magnitude = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
        return cv2.normalize(magnitude, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    raise MicroforgeError(f"unknown operation '{operation}'; valid: {', '.join(OPERATIONS)}")


# --- detections ----------------------------------------------------------------------------------

def detection_corners(det: Mapping[str, Any]) -> np.ndarray:
    """Corners (4, 2) of a detection ``{x, y, w, h, angle}``: centre, side along ``angle``, other side."""
    c, s = math.cos(det["angle"]), math.sin(det["angle"])
    u = np.array([c, s]) * det["w"] / 2
    v = np.array([-s, c]) * det["h"] / 2
    centre = np.array([det["x"], det["y"]])
    return np.stack([centre + u + v, centre - u + v, centre - u - v, centre + u - v])


def draw_overlay(image: np.ndarray, detections: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """The image (BGR) with each oriented box outlined."""
    out = to_bgr(image).copy()
    thickness = max(1, round(max(out.shape[:2]) / 600))
    polygons = [np.round(detection_corners(d)).astype(np.int32) for d in detections]
    cv2.polylines(out, polygons, True, (0, 255, 0), thickness, cv2.LINE_AA)
    return out


def detection_stats(detections: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{count, mean_length, mean_width, mean_aspect_ratio, lengths, widths, aspect_ratios, mean_area, areas}``.

    Length is the longer side, width the shorter; means are 0 when nothing was detected.
    """
    lengths = [float(max(d["w"], d["h"])) for d in detections]
    widths = [float(min(d["w"], d["h"])) for d in detections]
    aspects = [length / width if width > 0 else 0.0 for length, width in zip(lengths, widths)]
    areas = [float(d["w"] * d["h"]) for d in detections]

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else 0.0

    return {
        "count": len(detections),
        "mean_length": mean(lengths), "mean_width": mean(widths),
        "mean_aspect_ratio": mean(aspects), "mean_area": mean(areas),
        "lengths": lengths, "widths": widths, "aspect_ratios": aspects, "areas": areas,
    }
