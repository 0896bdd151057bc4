"""Image encoding shared by dataset writers (deterministic bytes for a given array)."""

from __future__ import annotations

import cv2
import numpy as np

from ..platform.errors import MicroforgeError

_ENCODE_PARAMS = {
    ".png": [cv2.IMWRITE_PNG_COMPRESSION, 3],
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".tif": [],
}


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """Encode a uint8 or uint16 (H, W) or (H, W, 3) image; ``suffix`` is ``.png``, ``.jpg`` or ``.tif``."""
    if suffix not in _ENCODE_PARAMS:
        raise MicroforgeError(f"cannot encode '{suffix}'; valid: {', '.join(_ENCODE_PARAMS)}")
    ok, buf = cv2.imencode(suffix, image, _ENCODE_PARAMS[suffix])
    if not ok:
        raise MicroforgeError(f"OpenCV failed to encode a {image.dtype} {image.shape} image as {suffix}")
    return buf.tobytes()
