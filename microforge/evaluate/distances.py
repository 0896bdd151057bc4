"""Distances between two sets of feature vectors: Fréchet distance and KID.

* :func:`frechet_distance` is the Fréchet (2-Wasserstein) distance between the Gaussians fitted
  to the two sets, ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))``, computed as pytorch-fid's
  ``calculate_frechet_distance`` does (a small ``eps`` on the diagonals when the product is
  singular, the imaginary part of the square root dropped). On Inception pool features it is FID.
* :func:`kernel_distance` is the unbiased squared MMD with the polynomial kernel
  ``k(x, y) = (x . y / d + 1)^3``, averaged over random subsets (as torch-fidelity and torchmetrics
  compute KID); its mean is near 0 (and can be negative) for two samples of one distribution.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ..platform.errors import ConfigError

__all__ = ["frechet_distance", "gaussian_stats", "kernel_distance", "polynomial_mmd"]

log = logging.getLogger(__name__)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` of features ``(N, D)`` (N >= 2)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ConfigError(f"need at least 2 feature vectors per set, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (pytorch-fid's formula).

    Raises:
        ConfigError: means or covariances of different shapes.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ConfigError(f"feature statistics differ in shape: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products (fewer images than features) are expected
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            log.debug("Fréchet distance: singular product of covariances; adding %g to the diagonals", eps)
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    value = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def polynomial_mmd(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                   coef0: float = 1.0) -> float:
    """Unbiased squared MMD between samples ``x (m, D)`` and ``y (n, D)`` with the kernel
    ``(gamma x . y + coef0)^degree``, ``gamma = 1 / D`` by default."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = (x @ x.T * gamma + coef0) ** degree
    k_yy = (y @ y.T * gamma + coef0) ** degree
    k_xy = (x @ y.T * gamma + coef0) ** degree
    m, n = x.shape[0], y.shape[0]
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


def kernel_distance(real: np.ndarray, fake: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation of :func:`polynomial_mmd` over ``subsets`` random subsets
    of ``subset_size`` vectors drawn without replacement from each set (``subset_size`` is capped
    at the smaller set's size; deterministic for a ``seed``).

    Raises:
        ConfigError: ``subsets < 1``, ``subset_size < 2``, a set of fewer than 2 vectors, or
            features of different widths.
    """
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if subsets < 1 or subset_size < 2:
        raise ConfigError(f"KID needs at least 1 subset of at least 2 images, got {subsets} x {subset_size}")
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ConfigError(f"feature sets differ in shape: {real.shape} vs {fake.shape}")
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ConfigError("KID needs at least 2 images in each set")
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd(real[rng.choice(real.shape[0], size, replace=False)],
                             fake[rng.choice(fake.shape[0], size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
