"""Per-image statistics of microscopy images, computed in float on the full bit depth."""

from __future__ import annotations

import numpy as np

# A pixel is bright when it lies this many robust standard deviations (1.4826 x MAD) above the
# image's median: the sparse bright features (walls, droplets) of a CARS image, not its noise.
BRIGHT_SIGMAS = 5.0
# Spatial frequencies above this (cycles per pixel; Nyquist is 0.5) form the FFT's high band.
FFT_SPLIT = 0.25
STATISTICS = ("mean", "std", "skew", "kurtosis", "sharpness", "noise", "fft_ratio", "sparsity")


def as_unit_float(image: np.ndarray) -> np.ndarray:
    """Integers divided by their dtype's maximum (every bit kept), floats as they are; float64."""
    array = np.asarray(image)
    if array.dtype.kind in "ui":
        return array.astype(np.float64) / float(np.iinfo(array.dtype).max)
    return array.astype(np.float64)


def _weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """``np.median`` of ``values`` repeated ``counts`` times (``values`` sorted)."""
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    lo, hi = np.searchsorted(cumulative, [(n - 1) // 2, n // 2], side="right")
    return (float(values[lo]) + float(values[hi])) / 2.0


def _median_and_mad(x: np.ndarray) -> tuple[float, float]:
    """The median and the median absolute deviation; through a histogram for 8/16-bit integers."""
    if x.dtype in (np.uint8, np.uint16):
        counts = np.bincount(x.ravel())
        values = np.flatnonzero(counts)
        counts = counts[values]
        median = _weighted_median(values, counts)
        deviation = np.abs(values - median)
        order = np.argsort(deviation, kind="stable")
        return median, _weighted_median(deviation[order], counts[order])
    x = np.asarray(x, dtype=np.float64)
    median = float(np.median(x))
    return median, float(np.median(np.abs(x - median)))


def bright_fraction(image: np.ndarray) -> float:
    """The fraction of pixels above ``median + BRIGHT_SIGMAS * 1.4826 * MAD`` (above the median
    when the MAD is zero)."""
    x = np.asarray(image)
    median, mad = _median_and_mad(x)
    return float(np.mean(x > median + BRIGHT_SIGMAS * 1.4826 * mad))


def fft_band_ratio(x: np.ndarray) -> float:
    """Power above :data:`FFT_SPLIT` cycles/pixel over the power below it (the mean removed)."""
    power = np.abs(np.fft.rfft2(x - x.mean())) ** 2
    fy = np.fft.fftfreq(x.shape[0])[:, None]
    fx = np.fft.rfftfreq(x.shape[1])[None, :]
    radius = np.hypot(fy, fx)
    low = float(power[(radius > 0) & (radius <= FFT_SPLIT)].sum())
    high = float(power[radius > FFT_SPLIT].sum())
    return high / low if low > 0 else 0.0


def noise_sigma(x: np.ndarray) -> float:
    """The Gaussian noise sigma of a 2-D image: ``skimage.restoration.estimate_sigma`` (MAD of the
    finest wavelet details; needs PyWavelets, a dependency of microforge)."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(x))


def image_statistics(image: np.ndarray) -> dict[str, float]:
    """:data:`STATISTICS` of one (H, W) image in the unit range (see :func:`as_unit_float`):
    mean, std, skew and excess kurtosis of the intensities, Laplacian-variance sharpness, noise
    sigma (:func:`noise_sigma`), FFT high/low band ratio, bright fraction."""
    import cv2
    from scipy import stats
    x = as_unit_float(image)
    flat = x.ravel()
    constant = float(flat.std()) == 0.0
    return {
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "skew": 0.0 if constant else float(stats.skew(flat)),
        "kurtosis": 0.0 if constant else float(stats.kurtosis(flat)),
        "sharpness": float(cv2.Laplacian(x, cv2.CV_64F).var()),
        "noise": noise_sigma(x),
        "fft_ratio": fft_band_ratio(x),
        "sparsity": bright_fraction(x),
    }
