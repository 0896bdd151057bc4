"""Per-image texture and morphology statistics, and their per-statistic distances between sets.

Every statistic is measured on the grey float image at full bit depth (see
:mod:`microforge.evaluate.texture`):

====================  ===========================================================================
``mean_intensity``    mean of the image in [0, 1] (16-bit images keep their 65,536 levels)
``std_intensity``     standard deviation of the image
``entropy``           Shannon entropy (bits) of a 256-bin histogram between the image's min and max
``lbp_entropy``       entropy (bits) of the uniform LBP histogram (8 points, radius 1)
``glcm_contrast``     GLCM contrast, distance 1, mean of 4 angles, 64 levels
``glcm_homogeneity``  GLCM homogeneity (same GLCM)
``glcm_energy``       GLCM energy (same GLCM)
``glcm_correlation``  GLCM correlation (same GLCM)
``gabor_energy``      mean Gabor magnitude, 3 frequencies x 4 orientations
``edge_fraction``     fraction of Canny edge pixels (sigma 1.5, on the percentile-stretched image)
``bright_fraction``   fraction of pixels above the image's Otsu threshold
``object_count``      bright objects (connected components above Otsu, >= 4 pixels)
``patch_mean_cv``     coefficient of variation of the means of an 8 x 8 grid of patches (0: uniform)
``object_area``       the area in pixels of every bright object (a distribution over all objects)
====================  ===========================================================================

Between two sets, each statistic's distance is the 1-D Wasserstein distance
(``scipy.stats.wasserstein_distance``) between its values over the images of each set (over the
objects, for ``object_area``), in the statistic's own unit.
"""

from __future__ import annotations

import numpy as np

from .texture import GLCM_PROPS, cached, gabor_energy, glcm_properties, lbp_histogram, stretch

__all__ = ["SCALAR_STATISTICS", "DISTRIBUTION_STATISTICS", "image_statistics", "statistic_distances"]

SCALAR_STATISTICS = ("mean_intensity", "std_intensity", "entropy", "lbp_entropy", "glcm_contrast",
                     "glcm_homogeneity", "glcm_energy", "glcm_correlation", "gabor_energy", "edge_fraction",
                     "bright_fraction", "object_count", "patch_mean_cv")
DISTRIBUTION_STATISTICS = ("object_area",)
MIN_OBJECT_AREA = 4


def _entropy(hist: np.ndarray) -> float:
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum()) if p.size else 0.0


def _patch_mean_cv(x: np.ndarray, grid: int = 8) -> float:
    h, w = x.shape
    ph, pw = max(h // grid, 1), max(w // grid, 1)
    gh, gw = h // ph, w // pw
    means = x[: gh * ph, : gw * pw].reshape(gh, ph, gw, pw).mean(axis=(1, 3))
    mean = means.mean()
    return float(means.std() / mean) if mean > 0 else 0.0


def _bright_objects(x: np.ndarray) -> tuple[float, np.ndarray]:
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    if x.max() <= x.min():
        return 0.0, np.zeros(0)
    bright = x > threshold_otsu(x)
    areas = np.bincount(label(bright, connectivity=2).ravel())[1:].astype(np.float64)
    return float(bright.mean()), areas[areas >= MIN_OBJECT_AREA]


def image_statistics(x: np.ndarray, cache: dict | None = None) -> tuple[dict[str, float], np.ndarray]:
    """The scalar statistics of a grey float image ``(H, W)`` (see the module doc), and the areas
    of its bright objects; ``cache`` shares LBP and GLCM with the ``texture`` descriptor."""
    from skimage.feature import canny

    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    hist = np.histogram(x, bins=256, range=(lo, hi if hi > lo else lo + 1.0))[0]
    glcm = cached(cache, "glcm", lambda: glcm_properties(x))
    contrast, homogeneity, energy, correlation = (glcm[GLCM_PROPS.index(p), 0] for p in
                                                  ("contrast", "homogeneity", "energy", "correlation"))
    bright_fraction, areas = _bright_objects(x)
    stats = {
        "mean_intensity": float(x.mean()),
        "std_intensity": float(x.std()),
        "entropy": _entropy(hist),
        "lbp_entropy": _entropy(cached(cache, ("lbp", 1), lambda: lbp_histogram(x, 8, 1))),
        "glcm_contrast": float(contrast),
        "glcm_homogeneity": float(homogeneity),
        "glcm_energy": float(energy),
        "glcm_correlation": float(correlation),
        "gabor_energy": gabor_energy(x),
        "edge_fraction": float(canny(stretch(x), sigma=1.5).mean()),
        "bright_fraction": bright_fraction,
        "object_count": float(areas.size),
        "patch_mean_cv": _patch_mean_cv(x),
    }
    return stats, areas


def statistic_distances(real: dict[str, np.ndarray], fake: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
    """Per statistic: the Wasserstein distance between the two sets' values, and each set's mean
    and standard deviation. ``real`` and ``fake`` map a statistic's name to its values."""
    from scipy.stats import wasserstein_distance

    out = {}
    for name in (*SCALAR_STATISTICS, *DISTRIBUTION_STATISTICS):
        a, b = np.asarray(real.get(name, []), np.float64), np.asarray(fake.get(name, []), np.float64)
        # No values in one set (e.g. no bright objects at all): None, as JSON has no NaN.
        entry: dict[str, float | None] = {"wasserstein": float(wasserstein_distance(a, b)) if a.size and b.size
                                          else (0.0 if a.size == b.size else None)}
        for label, values in (("real", a), ("fake", b)):
            entry[f"{label}_mean"] = float(values.mean()) if values.size else None
            entry[f"{label}_std"] = float(values.std()) if values.size else None
        out[name] = entry
    return out
