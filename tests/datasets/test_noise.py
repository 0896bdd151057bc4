import math

import numpy as np
import pytest

from microforge.datasets.noise import (
    BASE_NOISE_TYPES,
    NOISE_FUNCTIONS,
    NOISE_RANGES,
    NOISE_TYPES,
    SNR_CAP_DB,
    apply_noise,
    gaussian_noise,
    mixed_noise,
    poisson_noise,
    resolve_noise_type,
    salt_and_pepper_noise,
    sample_noise_parameter,
    snr_db,
    speckle_noise,
)
from microforge.platform.errors import ConfigError


@pytest.fixture
def ramp():
    """(64, 64) float32 image covering [0, 1]."""
    return np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)


def grey(value, size=128):
    return np.full((size, size), value, np.float32)


@pytest.mark.parametrize("name", BASE_NOISE_TYPES)
def test_each_type_changes_image_and_stays_in_range(name, ramp):
    noisy, params = NOISE_FUNCTIONS[name](ramp, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == ramp.shape
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert not np.array_equal(noisy, ramp)
    spec = NOISE_RANGES[name]
    assert params["type"] == name
    assert spec.lo <= params[spec.parameter] <= spec.hi


@pytest.mark.parametrize("name", BASE_NOISE_TYPES)
def test_noise_scale_bounds_the_sampled_parameter(name):
    spec = NOISE_RANGES[name]
    rng = np.random.default_rng(1)
    weakest = spec.hi if spec.strong_at_low else spec.lo
    assert sample_noise_parameter(name, rng, 0.0) == pytest.approx(weakest)
    full = [sample_noise_parameter(name, rng, 1.0) for _ in range(300)]
    assert spec.lo <= min(full) and max(full) <= spec.hi
    # Full scale reaches into the strong end, half scale never does.
    half = [sample_noise_parameter(name, rng, 0.5) for _ in range(300)]
    mid = (spec.lo + spec.hi) / 2
    if spec.strong_at_low:
        assert min(half) >= mid and min(full) < mid
    else:
        assert max(half) <= mid and max(full) > mid


@pytest.mark.parametrize("name", BASE_NOISE_TYPES)
def test_snr_decreases_as_noise_scale_increases(name, ramp):
    scales = [0.0, 0.3, 0.6, 1.0]
    mean_snr = []
    for scale in scales:
        values = []
        for seed in range(6):
            noisy, _ = NOISE_FUNCTIONS[name](ramp, np.random.default_rng(seed), noise_scale=scale)
            values.append(snr_db(ramp, noisy))
        mean_snr.append(np.mean(values))
    assert all(a > b for a, b in zip(mean_snr, mean_snr[1:])), mean_snr


def test_snr_definition_and_cap():
    clean = grey(0.5, 32)
    assert snr_db(clean, clean) == SNR_CAP_DB
    assert snr_db(clean, clean + 0.05) == pytest.approx(20.0, abs=1e-3)  # 0.25 / 0.0025
    assert snr_db(np.zeros_like(clean), clean) == -SNR_CAP_DB
    assert snr_db(np.zeros_like(clean), np.zeros_like(clean)) == SNR_CAP_DB
    with pytest.raises(ValueError):
        snr_db(clean, clean[:8])


def test_gaussian_std_matches_sigma():
    noisy, params = gaussian_noise(grey(0.5), np.random.default_rng(2), sigma=0.05)
    assert params == {"type": "gaussian", "sigma": 0.05}
    assert (noisy - 0.5).std() == pytest.approx(0.05, rel=0.05)


def test_poisson_preserves_the_mean():
    image = grey(0.3)
    noisy, params = poisson_noise(image, np.random.default_rng(3), lam=50.0)
    assert params == {"type": "poisson", "lam": 50.0}
    assert noisy.mean() == pytest.approx(0.3, abs=0.005)
    assert noisy.var() == pytest.approx(0.3 / 50.0, rel=0.1)  # Var = img / lam


def test_salt_and_pepper_fraction_matches_p():
    image = grey(0.5)
    noisy, params = salt_and_pepper_noise(image, np.random.default_rng(4), p=0.2)
    assert params["p"] == 0.2
    assert (noisy != 0.5).mean() == pytest.approx(0.2, abs=0.01)
    assert (noisy == 0.0).mean() == pytest.approx(0.1, abs=0.01)
    assert (noisy == 1.0).mean() == pytest.approx(0.1, abs=0.01)


def test_speckle_is_multiplicative():
    image = grey(0.5)
    image[:, :64] = 0.0
    noisy, _ = speckle_noise(image, np.random.default_rng(5), sigma=0.1)
    assert np.all(noisy[:, :64] == 0.0)
    assert noisy[:, 64:].std() == pytest.approx(0.05, rel=0.05)


def test_mixed_uses_two_or_three_distinct_types(ramp):
    counts = set()
    for seed in range(20):
        noisy, params = mixed_noise(ramp, np.random.default_rng(seed))
        types = [c["type"] for c in params["components"]]
        assert params["type"] == "mixed"
        assert 2 <= len(types) <= 3 and len(set(types)) == len(types)
        assert set(types) <= set(BASE_NOISE_TYPES)
        assert noisy.dtype == np.float32 and 0.0 <= noisy.min() and noisy.max() <= 1.0
        counts.add(len(types))
    assert counts == {2, 3}
    _, params = mixed_noise(ramp, np.random.default_rng(0), types=["poisson", "speckle"])
    assert sorted(c["type"] for c in params["components"]) == ["poisson", "speckle"]
    with pytest.raises(ConfigError, match="at least 2"):
        mixed_noise(ramp, np.random.default_rng(0), types=["poisson"])


def test_apply_noise_respects_mixed_prob_and_allowed_types(ramp):
    def kinds(types, prob):
        return {apply_noise(ramp, np.random.default_rng(s), types, mixed_prob=prob)[1]["type"] for s in range(12)}

    assert "mixed" not in kinds(NOISE_TYPES, 0.0)
    assert kinds(NOISE_TYPES, 1.0) == {"mixed"}
    assert kinds(["mixed"], 0.0) == {"mixed"}  # 'mixed' alone: always compound
    assert kinds(["gaussian", "speckle"], 1.0) <= {"gaussian", "speckle"}  # mixed not allowed


def test_noise_is_deterministic_given_the_generator(ramp):
    a, pa = apply_noise(ramp, np.random.default_rng(9), mixed_prob=0.5)
    b, pb = apply_noise(ramp, np.random.default_rng(9), mixed_prob=0.5)
    assert np.array_equal(a, b) and pa == pb


def test_typo_in_noise_type_suggests_the_name():
    assert resolve_noise_type("poisson") == "poisson"
    with pytest.raises(ConfigError, match="did you mean 'gaussian'") as err:
        resolve_noise_type("gausian")
    assert "salt_and_pepper" in str(err.value)  # lists the valid names
    with pytest.raises(ConfigError, match="did you mean 'salt_and_pepper'"):
        apply_noise(grey(0.5, 8), np.random.default_rng(0), ["salt_and_peper"])


def test_bad_scales_are_config_errors(ramp):
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="noise_scale"):
        apply_noise(ramp, rng, noise_scale=1.5)
    with pytest.raises(ConfigError, match="mixed_prob"):
        apply_noise(ramp, rng, mixed_prob=-0.1)
    with pytest.raises(ConfigError, match="empty"):
        apply_noise(ramp, rng, [])
    with pytest.raises(ConfigError, match="no single parameter"):
        sample_noise_parameter("mixed", rng)
    assert math.isfinite(snr_db(ramp, gaussian_noise(ramp, rng)[0]))
