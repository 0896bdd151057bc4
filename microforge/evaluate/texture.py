"""Texture measurements of one grey float image ``(H, W)``, shared by the ``texture`` feature
descriptor and the per-set statistics. Every function takes floats on the full bit depth; only
the grey-level co-occurrence matrix, which needs integers, bins the image (into ``levels`` bins
between the image's 0.5th and 99.5th percentiles, so a dim 16-bit image keeps its texture).
"""

from __future__ import annotations

import functools
import warnings

from typing import Any, Callable

import numpy as np

__all__ = ["GLCM_ANGLES", "cached", "downsample", "GLCM_PROPS", "bin_levels", "display_range", "gabor_energy", "glcm_properties",
           "lbp_histogram", "radial_band_powers", "stretch"]

GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
# skimage.filters.gabor_kernel's sigma for a bandwidth of 1 octave, times the frequency.
GABOR_SIGMA_PREFACTOR = np.sqrt(np.log(2) / 2) / np.pi * 3.0


def cached(cache: dict | None, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()``, memoised in ``cache`` under ``key`` (no memo when ``cache`` is None): the
    descriptor and the statistics of one image share their LBP and GLCM this way."""
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def downsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks (the image cropped to a multiple of ``factor``)."""
    if factor == 1:
        return x
    h, w = (x.shape[0] // factor) * factor, (x.shape[1] // factor) * factor
    return x[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def display_range(x: np.ndarray, p_lo: float = 0.5, p_hi: float = 99.5) -> tuple[float, float]:
    lo, hi = np.percentile(x, [p_lo, p_hi])
    if hi <= lo:
        lo, hi = float(x.min()), float(x.max())
    return float(lo), float(hi)


def stretch(x: np.ndarray) -> np.ndarray:
    """``x`` stretched from its 0.5th-99.5th percentiles to ``[0, 1]`` (zeros if constant)."""
    lo, hi = display_range(x)
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float64)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def bin_levels(x: np.ndarray, levels: int = 64) -> np.ndarray:
    """:func:`stretch` then binned into ``levels`` integer levels (uint8; ``levels <= 256``)."""
    return np.minimum((stretch(x) * levels).astype(np.int64), levels - 1).astype(np.uint8)


def glcm_properties(x: np.ndarray, distances: tuple[int, ...] = (1, 2, 4), levels: int = 64,
                    props: tuple[str, ...] = GLCM_PROPS) -> np.ndarray:
    """GLCM properties ``(len(props), len(distances))``, each averaged over the four angles
    (symmetric, normalised matrices; correlation of a constant image is 1)."""
    from skimage.feature import graycomatrix, graycoprops

    glcm = graycomatrix(bin_levels(x, levels), distances=list(distances), angles=list(GLCM_ANGLES),
                        levels=levels, symmetric=True, normed=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = np.stack([graycoprops(glcm, prop).mean(axis=1) for prop in props])
    return np.nan_to_num(values, nan=1.0)


def lbp_histogram(x: np.ndarray, points: int, radius: float) -> np.ndarray:
    """Normalised histogram ``(points + 2,)`` of rotation-invariant uniform LBP codes."""
    from skimage.feature import local_binary_pattern

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about float input; floats are what we want
        codes = local_binary_pattern(np.asarray(x, dtype=np.float64), points, radius, method="uniform")
    hist = np.bincount(codes.astype(np.int64).ravel(), minlength=points + 2)[: points + 2]
    return hist / max(hist.sum(), 1)


def radial_band_powers(x: np.ndarray, bands: int = 8) -> np.ndarray:
    """Fractions ``(bands,)`` of the (mean-removed) power spectrum in log-spaced radial frequency
    bands from 1/64 to 1/2 cycles per pixel (the lowest band also takes everything below)."""
    h, w = x.shape
    power = np.abs(np.fft.rfft2(x - x.mean())) ** 2
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    edges = np.geomspace(1 / 64, 0.5, bands + 1)
    edges[0], edges[-1] = 0.0, np.inf
    index = np.clip(np.searchsorted(edges, radius, side="right") - 1, 0, bands - 1)
    sums = np.bincount(index.ravel(), weights=power.ravel(), minlength=bands)
    total = sums.sum()
    return sums / total if total > 0 else np.full(bands, 1.0 / bands)


@functools.lru_cache(maxsize=8)
def _gabor_bank(shape: tuple[int, int], frequencies: tuple[float, ...], orientations: int) -> np.ndarray:
    """Transfer functions ``(F * O, H, W)`` of the Gabor bank (Gaussians around the centre
    frequencies, peak 1), cached per image shape."""
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    bank = []
    for frequency in frequencies:
        sigma = GABOR_SIGMA_PREFACTOR / frequency  # spatial sigma in pixels
        for k in range(orientations):
            theta = np.pi * k / orientations
            u, v = frequency * np.cos(theta), frequency * np.sin(theta)
            bank.append(np.exp(-2.0 * np.pi**2 * sigma**2 * ((fx - u) ** 2 + (fy - v) ** 2)))
    return np.stack(bank).astype(np.float32)


def gabor_energy(x: np.ndarray, frequencies: tuple[float, ...] = (0.1, 0.2, 0.3), orientations: int = 4) -> float:
    """Mean magnitude of the responses of a bank of ``frequencies`` x ``orientations`` complex
    Gabor filters (bandwidth 1 octave, as ``skimage.filters.gabor_kernel``; unit gain at the
    centre frequency) to the stretched, mean-removed image, filtered in the Fourier domain so
    that contrast, not brightness, is measured."""
    from scipy import fft

    image = stretch(x)
    spectrum = fft.fft2((image - image.mean()).astype(np.float32))
    responses = fft.ifft2(spectrum[None] * _gabor_bank(image.shape, tuple(frequencies), orientations), axes=(-2, -1))
    return float(np.abs(responses).mean())
