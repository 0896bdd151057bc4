"""Fréchet distance and KID on known distributions."""

import numpy as np
import pytest

from microforge.evaluate.distances import frechet_distance, gaussian_stats, kernel_distance
from microforge.platform.errors import ConfigError


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(50, 8))
    stats = gaussian_stats(features)
    assert frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, 1.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    # |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2 for diagonal covariances
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(4.0 + 1.0 + 1.0)


def test_frechet_distance_with_fewer_samples_than_features_is_finite():
    rng = np.random.default_rng(1)
    value = frechet_distance(*gaussian_stats(rng.normal(size=(5, 20))), *gaussian_stats(rng.normal(size=(5, 20))))
    assert np.isfinite(value) and value > 0


def test_kid_is_unbiased_near_zero_for_one_distribution_and_large_across():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    shifted = rng.normal(0.5, 1.0, size=(200, 16))
    same, same_std = kernel_distance(x, y, subsets=20, subset_size=100)
    cross, _ = kernel_distance(x, shifted, subsets=20, subset_size=100)
    assert abs(same) < 0.05 * cross
    assert same_std > 0
    assert kernel_distance(x, y, subsets=20, subset_size=100) == (same, same_std)  # deterministic


def test_kid_rejects_bad_sizes():
    x = np.zeros((4, 3))
    with pytest.raises(ConfigError):
        kernel_distance(x, x, subsets=0)
    with pytest.raises(ConfigError):
        kernel_distance(x, np.zeros((4, 2)))
