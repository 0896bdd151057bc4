"""Image sets written as 16-bit TIFFs for the evaluation tests (blob renders at 64 px)."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from microforge.datasets.blobs import render_blob_batch

N_IMAGES = 20
SIZE = 64


def write_set(directory: Path, images: np.ndarray, bits: int = 16) -> Path:
    """Write float images (B, H, W) in [0, 1] as 16-bit TIFFs (or 8-bit PNGs for ``bits=8``)."""
    import cv2

    directory.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(np.clip(images, 0.0, 1.0)):
        if bits == 16:
            tifffile.imwrite(directory / f"img_{i:03d}.tif", np.round(image * 65535).astype(np.uint16))
        else:
            cv2.imwrite(str(directory / f"img_{i:03d}.png"), np.round(image * 255).astype(np.uint8))
    return directory


# One noise type, so that the images of a set look alike (the default mixes five).
BLOB_CONFIG = {"size": SIZE, "noise_types": ("gaussian",), "noise_scale": 0.3}


def blobs(seed: int, n: int = N_IMAGES, **config) -> np.ndarray:
    return render_blob_batch({**BLOB_CONFIG, **config}, seed, range(n))["image"][:, 0]


def blurred(images: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(image, sigma) for image in images])


def noisy(images: np.ndarray, scale: float = 0.15, seed: int = 99) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(images + rng.normal(0.0, scale, images.shape), 0.0, 1.0)


@pytest.fixture(scope="session")
def image_sets(tmp_path_factory) -> dict[str, Path]:
    """Blob sets: ``a`` and ``b`` (one config, two seeds), ``other`` (dark polarity, other noise),
    ``blurred`` and ``noisy`` copies of ``a``."""
    root = tmp_path_factory.mktemp("sets")
    a = blobs(1)
    return {
        "a": write_set(root / "a", a),
        "b": write_set(root / "b", blobs(2)),
        "other": write_set(root / "other", blobs(3, polarity="dark")),
        "blurred": write_set(root / "blurred", blurred(a)),
        "noisy": write_set(root / "noisy", noisy(a)),
    }
