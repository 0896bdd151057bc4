"""Named, parameterised input transforms, recorded in artifacts and applied by one function.

A transform turns an image as it is stored (uint8, uint16 or float) into the float32 values a
model was trained on, and (for generators) back. Training, eval, generation and Serve all call
:meth:`Transform.apply` / :meth:`Transform.invert` of the transform the artifact records, so a
16-bit image gets the same numbers everywhere.

=============  =====================================================================================
``identity``   float32 copy, no scaling (inputs already in the model's range)
``unit_range`` integers divided by their dtype's maximum (255, 65535) -> [0, 1]; floats must already
               be in [0, 1]
``percentile`` optional ``log1p``, then each image clipped to its ``[p_lo, p_hi]`` percentiles and
               stretched to [0, 1] (16-bit microscopy with sparse bright features)
``signed_unit`` as ``unit_range``, then mapped to [-1, 1] (GAN inputs and outputs)
=============  =====================================================================================

Specs are JSON: ``{"name": "percentile", "params": {"p_lo": 0.1, "p_hi": 99.9, "log1p": true}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .config import suggest
from .errors import ConfigError

__all__ = ["TRANSFORMS", "Transform", "dtype_max", "percentile_stretch", "transform_from_spec"]

_INTEGER_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def dtype_max(dtype: Any) -> float:
    """255 for uint8, 65535 for uint16.

    Raises:
        ConfigError: another dtype.
    """
    try:
        return _INTEGER_MAX[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ConfigError(f"images must be uint8 or uint16 (or float in the model's range), got {dtype}") from None


def _floats(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype.kind != "f":
        raise ConfigError(f"images must be uint8, uint16 or float, got {array.dtype}")
    if array.size and (not np.isfinite(array).all() or array.min() < lo or array.max() > hi):
        raise ConfigError(f"float images must hold finite values in [{lo:g}, {hi:g}]; rescale them first")
    return array.astype(np.float32)


def _unit(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype.kind in "ui":
        return array.astype(np.float32) / np.float32(dtype_max(array.dtype))
    return _floats(array, 0.0, 1.0)


def percentile_stretch(image: np.ndarray, p_lo: float, p_hi: float, log1p: bool
                       ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The ``percentile`` transform and the clip values it used: per image (the last two axes),
    optional ``log1p``, clip to the ``[p_lo, p_hi]`` percentiles and stretch to [0, 1] (a flat
    image becomes 0). Returns the float32 result and ``(low, high)`` per image."""
    array = np.asarray(image)
    if array.dtype.kind not in "uif":
        raise ConfigError(f"images must be numeric, got {array.dtype}")
    x = array.astype(np.float32)
    if log1p:
        x = np.log1p(np.maximum(x, 0.0))
    lead = x.shape[:-2]
    flat = x.reshape(-1, *x.shape[-2:]) if lead else x[None]
    out = np.empty_like(flat)
    bounds = []
    for i, plane in enumerate(flat):
        lo, hi = (float(v) for v in np.percentile(plane, [p_lo, p_hi]))
        out[i] = np.clip((plane - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(plane)
        bounds.append((lo, hi))
    return out.reshape(x.shape), bounds


def _percentile(image: np.ndarray, p_lo: float, p_hi: float, log1p: bool) -> np.ndarray:
    return percentile_stretch(image, p_lo, p_hi, log1p)[0]


def _from_unit(x: np.ndarray, dtype: Any) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    if dtype is None or np.dtype(dtype).kind == "f":
        return x
    return np.round(x * dtype_max(dtype)).astype(dtype)


@dataclass(frozen=True)
class _Kind:
    apply: Callable[..., np.ndarray]
    invert: Callable[..., np.ndarray]
    defaults: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] = lambda params: None


def _check_percentile(params: dict[str, Any]) -> None:
    lo, hi = params["p_lo"], params["p_hi"]
    if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 <= lo < hi <= 100):
        raise ConfigError(f"percentile transform needs 0 <= p_lo < p_hi <= 100, got p_lo={lo!r}, p_hi={hi!r}")
    if not isinstance(params["log1p"], bool):
        raise ConfigError(f"percentile transform: log1p must be true or false, got {params['log1p']!r}")


TRANSFORMS: dict[str, _Kind] = {
    "identity": _Kind(lambda x: np.asarray(x, dtype=np.float32), lambda x, dtype=None: _from_unit(x, dtype)),
    "unit_range": _Kind(_unit, lambda x, dtype=None: _from_unit(x, dtype)),
    "percentile": _Kind(_percentile, lambda x, dtype=None, **_: _from_unit(x, dtype),
                        {"p_lo": 0.1, "p_hi": 99.9, "log1p": False}, _check_percentile),
    "signed_unit": _Kind(lambda x: _unit(x) * 2.0 - 1.0 if np.asarray(x).dtype.kind in "ui"
                         else _floats(x, -1.0, 1.0),
                         lambda x, dtype=None: _from_unit((np.asarray(x, dtype=np.float32) + 1.0) / 2.0, dtype)),
}


@dataclass(frozen=True)
class Transform:
    """A named transform with its parameters (see the module doc).

    Raises:
        ConfigError: an unknown name (with a did-you-mean) or an unknown/invalid parameter.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in TRANSFORMS:
            raise ConfigError(f"unknown transform '{self.name}'{suggest(str(self.name), list(TRANSFORMS))}; "
                              f"valid: {', '.join(TRANSFORMS)}")
        kind = TRANSFORMS[self.name]
        unknown = [k for k in self.params if k not in kind.defaults]
        if unknown:
            raise ConfigError(f"transform '{self.name}' has no parameter '{unknown[0]}'"
                              f"{suggest(unknown[0], list(kind.defaults))}"
                              + (f"; valid: {', '.join(kind.defaults)}" if kind.defaults else ""))
        full = {**kind.defaults, **self.params}
        kind.check(full)
        object.__setattr__(self, "params", full)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Stored image(s) ``(..., H, W)`` -> float32 model input.

        Raises:
            ConfigError: a dtype the transform does not take, or floats outside its range.
        """
        return TRANSFORMS[self.name].apply(image, **self.params)

    def invert(self, values: np.ndarray, dtype: Any = np.uint8) -> np.ndarray:
        """Model output -> an image of ``dtype`` (uint8, uint16, or float32 in [0, 1])."""
        return TRANSFORMS[self.name].invert(values, dtype)

    def spec(self) -> dict[str, Any]:
        """The JSON recorded in artifacts: ``{"name", "params"}``."""
        return {"name": self.name, "params": dict(self.params)}


def transform_from_spec(spec: "Mapping[str, Any] | str | Transform | None") -> Transform:
    """A :class:`Transform` from its JSON spec, its bare name, or None (``unit_range``).

    Raises:
        ConfigError: a malformed spec, an unknown name or parameter.
    """
    if isinstance(spec, Transform):
        return spec
    if spec is None:
        return Transform("unit_range")
    if isinstance(spec, str):
        return Transform(spec)
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or set(spec) - {"name", "params"}:
        raise ConfigError(f"a transform is {{'name': ..., 'params': {{...}}}}, got {spec!r}")
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"transform '{spec['name']}': params must be a mapping, got {params!r}")
    return Transform(spec["name"], dict(params))
