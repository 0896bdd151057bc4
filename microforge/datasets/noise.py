"""Image noise models for synthetic microscopy, with the realised signal-to-noise ratio.

Every function takes a float32 image ``(H, W)`` with values in [0, 1] and an explicit
:class:`numpy.random.Generator`, and returns ``(noisy, params)``: a new float32 image clipped to
[0, 1] and a JSON-serialisable dict of the parameters used (``{"type": ..., <param>: ...}``).

Noise types and their parameter ranges (the ranges of the original delineation tool):

- ``gaussian``: ``img + N(0, sigma^2)``, ``sigma`` in [0.01, 1.5].
- ``poisson``: ``poisson(img * lam) / lam`` (img is a photon-count rate), ``lam`` in [1, 300].
- ``salt_and_pepper``: a fraction ``p`` of pixels set to 0 or 1 (half each), ``p`` in [0.01, 0.5].
- ``speckle``: ``img * (1 + N(0, sigma^2))`` (multiplicative), ``sigma`` in [0.05, 2.0].
- ``mixed``: 2 or 3 distinct types above, applied in sequence, each with its own parameter.

``noise_scale`` in [0, 1] limits how strong the sampled noise may be. A strength ``t`` is drawn
uniformly from ``[0, noise_scale]`` and mapped linearly onto the parameter range, from its weak
end (``t = 0``) to its strong end (``t = 1``). For gaussian, salt_and_pepper and speckle the weak
end is the low end, so the parameter is uniform on ``[lo, lo + noise_scale * (hi - lo)]``; for
poisson fewer photons mean stronger noise, so ``lam`` is uniform on
``[hi - noise_scale * (hi - lo), hi]``. ``noise_scale = 0`` therefore always gives the weakest
noise of the type (never none), ``noise_scale = 1`` samples the whole original range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

BASE_NOISE_TYPES: tuple[str, ...] = ("gaussian", "poisson", "salt_and_pepper", "speckle")
NOISE_TYPES: tuple[str, ...] = BASE_NOISE_TYPES + ("mixed",)

# A clean image has infinite SNR; a finite cap keeps metadata valid JSON and SNR bins finite.
SNR_CAP_DB = 100.0


@dataclass(frozen=True)
class NoiseRange:
    """The sampled parameter of a noise type: its name, range and which end is the strong one."""

    parameter: str
    lo: float
    hi: float
    strong_at_low: bool = False

    def value_at(self, strength: float) -> float:
        """Parameter value at a strength in [0, 1] (0 = weakest noise, 1 = strongest)."""
        if self.strong_at_low:
            return self.hi - strength * (self.hi - self.lo)
        return self.lo + strength * (self.hi - self.lo)


NOISE_RANGES: dict[str, NoiseRange] = {
    "gaussian": NoiseRange("sigma", 0.01, 1.5),
    "poisson": NoiseRange("lam", 1.0, 300.0, strong_at_low=True),
    "salt_and_pepper": NoiseRange("p", 0.01, 0.5),
    "speckle": NoiseRange("sigma", 0.05, 2.0),
}


def resolve_noise_type(name: str) -> str:
    """Return ``name`` if it is a noise type.

    Raises:
        ConfigError: ``name`` is not one of :data:`NOISE_TYPES`; the message lists the valid
            names and suggests the closest.
    """
    if name in NOISE_TYPES:
        return name
    raise ConfigError(
        f"unknown noise type '{name}'{suggest(str(name), NOISE_TYPES)}; valid: {', '.join(NOISE_TYPES)}"
    )


def _check_scale(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def sample_noise_parameter(noise_type: str, rng: np.random.Generator, noise_scale: float = 1.0) -> float:
    """Draw the parameter of a base noise type at a strength uniform on ``[0, noise_scale]``.

    Raises:
        ConfigError: unknown or non-base noise type, or ``noise_scale`` outside [0, 1].
    """
    spec = NOISE_RANGES.get(resolve_noise_type(noise_type))
    if spec is None:
        raise ConfigError(f"'{noise_type}' has no single parameter; base types: {', '.join(BASE_NOISE_TYPES)}")
    strength = rng.uniform(0.0, _check_scale("noise_scale", noise_scale))
    return float(spec.value_at(strength))


def _finish(out: np.ndarray) -> np.ndarray:
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def gaussian_noise(
    image: np.ndarray, rng: np.random.Generator, sigma: float | None = None, *, noise_scale: float = 1.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Additive Gaussian noise ``image + N(0, sigma^2)``; ``sigma`` drawn if not given.

    Args:
        image: float32 ``(H, W)`` in [0, 1].
    Returns:
        float32 ``(H, W)`` in [0, 1] and ``{"type": "gaussian", "sigma": sigma}``.
    """
    if sigma is None:
        sigma = sample_noise_parameter("gaussian", rng, noise_scale)
    out = image + np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    return _finish(out), {"type": "gaussian", "sigma": float(sigma)}


def poisson_noise(
    image: np.ndarray, rng: np.random.Generator, lam: float | None = None, *, noise_scale: float = 1.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Shot noise: the image is a photon-count rate, ``poisson(image * lam) / lam``.

    The mean is preserved (before clipping at 1); the relative noise is ``1 / sqrt(image * lam)``,
    so a low ``lam`` is strong noise.

    Args:
        image: float32 ``(H, W)`` in [0, 1].
    Returns:
        float32 ``(H, W)`` in [0, 1] and ``{"type": "poisson", "lam": lam}``.
    """
    if lam is None:
        lam = sample_noise_parameter("poisson", rng, noise_scale)
    if lam <= 0:
        raise ConfigError(f"poisson lam must be > 0, got {lam}")
    counts = rng.poisson(image * np.float32(lam))
    out = counts.astype(np.float32) / np.float32(lam)
    return _finish(out), {"type": "poisson", "lam": float(lam)}


def salt_and_pepper_noise(
    image: np.ndarray, rng: np.random.Generator, p: float | None = None, *, noise_scale: float = 1.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Impulse noise: each pixel becomes 0 with probability ``p/2`` and 1 with probability ``p/2``.

    Args:
        image: float32 ``(H, W)`` in [0, 1].
    Returns:
        float32 ``(H, W)`` in [0, 1] and ``{"type": "salt_and_pepper", "p": p}``.
    """
    if p is None:
        p = sample_noise_parameter("salt_and_pepper", rng, noise_scale)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"salt_and_pepper p must be in [0, 1], got {p}")
    u = rng.random(image.shape, dtype=np.float32)
    out = image.astype(np.float32, copy=True)
    out[u < p / 2] = 0.0
    out[(u >= p / 2) & (u < p)] = 1.0
    return _finish(out), {"type": "salt_and_pepper", "p": float(p)}


def speckle_noise(
    image: np.ndarray, rng: np.random.Generator, sigma: float | None = None, *, noise_scale: float = 1.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Multiplicative Gaussian noise ``image * (1 + N(0, sigma^2))``; zero pixels stay zero.

    Args:
        image: float32 ``(H, W)`` in [0, 1].
    Returns:
        float32 ``(H, W)`` in [0, 1] and ``{"type": "speckle", "sigma": sigma}``.
    """
    if sigma is None:
        sigma = sample_noise_parameter("speckle", rng, noise_scale)
    out = image * (1.0 + np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32))
    return _finish(out), {"type": "speckle", "sigma": float(sigma)}


NOISE_FUNCTIONS: dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]] = {
    "gaussian": gaussian_noise,
    "poisson": poisson_noise,
    "salt_and_pepper": salt_and_pepper_noise,
    "speckle": speckle_noise,
}


def mixed_noise(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    noise_scale: float = 1.0,
    types: Sequence[str] = BASE_NOISE_TYPES,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Compound noise: 2 or 3 distinct types from ``types`` (3 only if available), in random
    order, each applied to the previous result with its own parameter drawn at ``noise_scale``.

    Args:
        image: float32 ``(H, W)`` in [0, 1].
        types: the base types to draw from (at least 2 distinct).
    Returns:
        float32 ``(H, W)`` in [0, 1] and ``{"type": "mixed", "components": [params, ...]}``.

    Raises:
        ConfigError: fewer than 2 distinct base types, or an unknown one.
    """
    pool = sorted({resolve_noise_type(t) for t in types} - {"mixed"}, key=BASE_NOISE_TYPES.index)
    if len(pool) < 2:
        raise ConfigError(f"mixed noise needs at least 2 distinct base types, got {list(types)}")
    count = int(rng.integers(2, min(3, len(pool)) + 1))
    chosen = [pool[i] for i in rng.permutation(len(pool))[:count]]
    components = []
    out = image
    for name in chosen:
        out, params = NOISE_FUNCTIONS[name](out, rng, noise_scale=noise_scale)
        components.append(params)
    return out, {"type": "mixed", "components": components}


def apply_noise(
    image: np.ndarray,
    rng: np.random.Generator,
    noise_types: Sequence[str] = NOISE_TYPES,
    *,
    noise_scale: float = 1.0,
    mixed_prob: float = 0.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply one noise drawn from the allowed ``noise_types``.

    With probability ``mixed_prob`` (when ``"mixed"`` is allowed) the noise is compound, built
    from the allowed base types (all four if ``"mixed"`` is the only one listed, in which case
    every sample is compound); otherwise one allowed base type is chosen uniformly.

    Args:
        image: float32 ``(H, W)`` in [0, 1].
    Returns:
        float32 ``(H, W)`` in [0, 1] and the parameters (see :func:`mixed_noise` for compound).

    Raises:
        ConfigError: unknown type, empty list, ``"mixed"`` with a single base type, or a scale
            outside [0, 1].
    """
    allowed = [resolve_noise_type(t) for t in noise_types]
    if not allowed:
        raise ConfigError(f"noise_types is empty; choose from {', '.join(NOISE_TYPES)}")
    _check_scale("noise_scale", noise_scale)
    _check_scale("mixed_prob", mixed_prob)
    base = [t for t in BASE_NOISE_TYPES if t in allowed]
    # Always draw the coin so the stream position does not depend on the allowed types.
    coin = rng.random()
    use_mixed = "mixed" in allowed and (coin < mixed_prob or not base)
    if use_mixed:
        return mixed_noise(image, rng, noise_scale=noise_scale, types=base or BASE_NOISE_TYPES)
    name = base[int(rng.integers(len(base)))]
    return NOISE_FUNCTIONS[name](image, rng, noise_scale=noise_scale)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Signal-to-noise ratio in decibels, ``10 log10(mean(clean^2) / mean((noisy - clean)^2))``.

    The signal power is the mean square of the clean image (the power definition used for
    images and signals alike; it does not depend on the sign convention of a background), the
    noise power is the mean square of the difference actually realised, after clipping.
    The result is clamped to ``[-SNR_CAP_DB, SNR_CAP_DB]``: an identical image gives
    ``SNR_CAP_DB`` (100 dB) instead of +inf, an all-zero clean image with noise gives
    ``-SNR_CAP_DB``.

    Args:
        clean, noisy: arrays of the same shape.
    """
    if clean.shape != noisy.shape:
        raise ValueError(f"snr_db: shapes differ: {clean.shape} vs {noisy.shape}")
    clean = np.asarray(clean, dtype=np.float32).ravel()
    diff = np.asarray(noisy, dtype=np.float32).ravel() - clean
    # float64 accumulation: float32 sums of ~10^6 squares would lose digits.
    signal = float(np.einsum("i,i->", clean, clean, dtype=np.float64))
    noise = float(np.einsum("i,i->", diff, diff, dtype=np.float64))
    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(np.clip(10.0 * math.log10(signal / noise), -SNR_CAP_DB, SNR_CAP_DB))
