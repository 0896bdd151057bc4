"""``prepare``: source images (TIFF/PNG, any bit depth) -> per-image percentile-normalised images.

Each image is read as one gray plane (:func:`~.discover.read_source`), normalised by the
``percentile`` transform of :mod:`microforge.platform.transforms` (optional ``log1p``, clip to
the image's ``[p_low, p_high]`` percentiles, stretch to [0, 1]), optionally denoised in float,
and written as an 8-bit, 16-bit or float32 TIFF under ``images/``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...platform.errors import ConfigError
from ...platform.transforms import Transform, percentile_stretch
from .discover import discover_images, read_source
from .jobs import FileJob, JobSummary, run_job
from .stats import bright_fraction, noise_sigma

log = logging.getLogger(__name__)

BITS = {"8": "uint8", "16": "uint16", "float": "float32"}
DENOISERS = ("none", "median", "bilateral", "nlm")


def encode_tiff(image: np.ndarray) -> bytes:
    """Deterministic TIFF bytes of a 2-D uint8/uint16/float32 image (no description or date)."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, metadata=None, software=False)
    return buffer.getvalue()


def denoise(x: np.ndarray, method: str) -> np.ndarray:
    """Denoise a float32 image in [0, 1]: 3x3 median, bilateral (5 px, sigma 0.1 of the range)
    or non-local means (``skimage.restoration.denoise_nl_means`` at the estimated noise)."""
    import cv2

    if method == "none":
        return x
    if method == "median":
        return cv2.medianBlur(x, 3)
    if method == "bilateral":
        return cv2.bilateralFilter(x, 5, 0.1, 2.0)
    from skimage.restoration import denoise_nl_means

    sigma = noise_sigma(x)
    if sigma == 0.0:
        return x
    return denoise_nl_means(x, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                            fast_mode=True).astype(np.float32)


def prepare_params(p_low: float = 5.0, p_high: float = 95.0, log1p: bool = False, bits: str = "16",
                   denoise_method: str = "none", page: int = 0) -> dict[str, Any]:
    """The checked parameters of a prepare job.

    Raises:
        ConfigError: ``p_low >= p_high``, a percentile outside [0, 100], an unknown bit depth or
            denoiser, or a negative page.
    """
    if not 0 <= p_low < p_high <= 100:
        raise ConfigError(f"--p-low must be below --p-high, both within [0, 100]; got {p_low:g} and {p_high:g}")
    Transform("percentile", {"p_lo": float(p_low), "p_hi": float(p_high), "log1p": bool(log1p)})
    if str(bits) not in BITS:
        raise ConfigError(f"--bits must be one of {', '.join(BITS)}, got '{bits}'")
    if denoise_method not in DENOISERS:
        raise ConfigError(f"--denoise must be one of {', '.join(DENOISERS)}, got '{denoise_method}'")
    if page < 0:
        raise ConfigError(f"--page must be >= 0, got {page}")
    return {"p_low": float(p_low), "p_high": float(p_high), "log1p": bool(log1p), "bits": str(bits),
            "denoise": denoise_method, "page": int(page)}


def prepare_image(item: dict[str, Any], data: bytes, params: dict[str, Any]) -> tuple[dict[str, bytes], dict]:
    """Normalise one source file's bytes; the image file and its manifest columns.

    Raises:
        DatasetError: an undecodable source or a page it does not have.
    """
    source = read_source(data, item["source"], params["page"])
    transform = Transform("percentile", {"p_lo": params["p_low"], "p_hi": params["p_high"],
                                         "log1p": params["log1p"]})
    # The percentile transform, computed once for its values and the clip values it used.
    stretched, [(clip_low, clip_high)] = percentile_stretch(source.image, **transform.params)
    unit = denoise(stretched, params["denoise"])
    image = transform.invert(unit, np.dtype(BITS[params["bits"]]))
    rel = f"images/{item['index']:07d}.tif"
    columns = {
        "image": rel, "source_dtype": source.dtype, "source_channels": source.channels,
        "source_pages": source.pages, "page": params["page"], "p_low": params["p_low"],
        "p_high": params["p_high"], "clip_low": clip_low, "clip_high": clip_high,
        "sparsity": bright_fraction(source.image), "height": int(image.shape[0]), "width": int(image.shape[1]),
    }
    return {rel: encode_tiff(image)}, columns


def prepare(source: str | Path, out: str | Path, *, workers: int | None = None, overwrite: bool = False,
            address: str | None = None, **params: Any) -> JobSummary:
    """Prepare every image under ``source`` into the dataset directory ``out`` (see the module doc).

    Raises:
        ConfigError: invalid parameters (see :func:`prepare_params`).
        DatasetError: no images under ``source``; ``out`` made by another job.
    """
    checked = prepare_params(**params)
    root = Path(source).expanduser().absolute()
    sources = discover_images(root)
    items = [{"index": i, "input": rel, "source": rel, "split": "train"} for i, rel in enumerate(sources)]
    job = FileJob("prepare", {**checked, "source_dir": str(root)}, root, items, prepare_image)
    summary = run_job(job, out, workers=workers, overwrite=overwrite, address=address)
    colour = [r["source"] for r in summary.rows if (r.get("source_channels") or 1) > 1]
    if colour:
        log.warning("%d colour image(s) converted to gray: %s", len(colour), ", ".join(colour[:5])
                    + (" ..." if len(colour) > 5 else ""))
    return summary
