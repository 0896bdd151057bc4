"""Image encoding shared by dataset writers (deterministic bytes for a given array)."""

from __future__ import annotations

import cv2
import numpy as np

from ..platform.errors import MicroforgeError

# PNG compression: ``"fast"`` or a zlib level 0-9 (OpenCV's default row filters and strategy).
# Synthetic microscopy is noisy, so zlib's string matching finds little to match: "fast" (the
# AVG row filter, zlib level 1, Huffman-only coding) encodes a 1024 x 768 crystal image ~3.5x
# faster than level 3 and 10 % smaller; 16-bit CARS images ~3x faster, 3 % smaller
# (benchmarks/generate_throughput.py --png-level prints the trade-off).
FAST_PNG = "fast"
DEFAULT_PNG_LEVEL = 3  # of encode_image without png_level: callers that predate --png-level keep their bytes
JPEG_QUALITY = 95
SUFFIXES = (".png", ".jpg", ".tif")
# IMWRITE_PNG_FILTER is OpenCV >= 4.10; older versions keep their adaptive filter choice.
_FAST_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    _FAST_PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_AVG]


def parse_png_level(value: int | str) -> int | str:
    """``"fast"`` or a zlib level from 0 (none) to 9 (smallest, slowest); digits in a string are
    read as the level (the CLI's ``--png-level``).

    Raises:
        MicroforgeError: anything else.
    """
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value == FAST_PNG or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9):
        return value
    raise MicroforgeError(f"--png-level must be '{FAST_PNG}' or a zlib level from 0 to 9, got '{value}'")


def encode_image(image: np.ndarray, suffix: str, *, png_level: int | str | None = None) -> bytes:
    """Encode a uint8 or uint16 (H, W) or (H, W, 3) image; ``suffix`` is ``.png``, ``.jpg`` or ``.tif``;
    ``png_level`` (see :func:`parse_png_level`; default :data:`DEFAULT_PNG_LEVEL`) applies to PNG only."""
    if suffix == ".png":
        level = DEFAULT_PNG_LEVEL if png_level is None else parse_png_level(png_level)
        params = _FAST_PNG_PARAMS if level == FAST_PNG else [cv2.IMWRITE_PNG_COMPRESSION, level]
    elif suffix == ".jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    elif suffix == ".tif":
        params = []
    else:
        raise MicroforgeError(f"cannot encode '{suffix}'; valid: {', '.join(SUFFIXES)}")
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise MicroforgeError(f"OpenCV failed to encode a {image.dtype} {image.shape} image as {suffix}")
    return buf.tobytes()
