"""``enhance`` (CLAHE, gamma, adaptive gamma, histogram equalisation, unsharp mask) and ``fix``
(re-stretch images written too dark) over a dataset directory, each into a new dataset.

Images are processed as float in [0, 1] (integers divided by their dtype's maximum) with
scikit-image, and written back in their own dtype, so a 16-bit dataset stays 16-bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...platform.errors import ConfigError, DatasetError
from ...platform.transforms import Transform
from ..images import encode_image
from ..manifest import DEFAULT_SPLIT, INFO_FILE, read_manifest
from .discover import read_source
from .jobs import FileJob, JobSummary, run_job
from .prepare import encode_tiff
from .stats import as_unit_float

# Each op's parameters and their defaults (the CLI offers each as --name-with-dashes).
OPS: dict[str, dict[str, float]] = {
    "clahe": {"clip_limit": 0.01, "kernel_size": 0.0, "nbins": 256},
    "gamma": {"gamma": 1.0},
    "adaptive_gamma": {"target_mean": 0.5},
    "equalize": {"nbins": 256},
    "unsharp": {"radius": 1.0, "amount": 1.0},
}
_UNIT = Transform("unit_range")


def check_enhance(op: str, params: dict[str, Any]) -> dict[str, Any]:
    """The op's full parameters (defaults filled in), checked.

    Raises:
        ConfigError: an unknown op or parameter, or a value out of its range.
    """
    if op not in OPS:
        raise ConfigError(f"unknown enhance op '{op}'; valid: {', '.join(OPS)}")
    unknown = sorted(set(params) - set(OPS[op]))
    if unknown:
        raise ConfigError(f"--op {op} takes no --{unknown[0].replace('_', '-')}; it takes "
                          + ", ".join(f"--{k.replace('_', '-')}" for k in OPS[op]))
    full = {**OPS[op], **{k: float(v) for k, v in params.items()}}
    positive = {"gamma", "radius", "clip_limit", "nbins"} & set(full)
    bad = [k for k in positive if not full[k] > 0]
    if not 0 < full.get("target_mean", 0.5) < 1:
        bad.append("target_mean")
    if full.get("kernel_size", 0) < 0:
        bad.append("kernel_size")
    if bad:
        raise ConfigError(f"--{bad[0].replace('_', '-')} is out of range ({full[bad[0]]:g}); gamma, radius, "
                          "clip limit and bins must be > 0, the target mean in (0, 1), the kernel size >= 0")
    return full


def adaptive_gamma(x: np.ndarray, target_mean: float) -> float:
    """The gamma whose ``x ** gamma`` has mean ``target_mean`` (bisection on log gamma)."""
    lo, hi = np.log(1e-3), np.log(1e3)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if float(np.mean(x ** np.exp(mid))) > target_mean:
            lo = mid  # too bright: a larger gamma darkens
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def enhance_array(x: np.ndarray, op: str, params: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply ``op`` to a float image in [0, 1]; the result in [0, 1] and extra manifest columns."""
    from skimage import exposure, filters

    if op == "clahe":
        kernel = int(params["kernel_size"]) or None
        return exposure.equalize_adapthist(x, kernel_size=kernel, clip_limit=params["clip_limit"],
                                           nbins=int(params["nbins"])), {}
    if op == "gamma":
        return exposure.adjust_gamma(x, params["gamma"]), {}
    if op == "adaptive_gamma":
        gamma = adaptive_gamma(x, params["target_mean"])
        return x ** gamma, {"gamma": gamma}
    if op == "equalize":
        return exposure.equalize_hist(x, nbins=int(params["nbins"])), {}
    return filters.unsharp_mask(x, radius=params["radius"], amount=params["amount"]), {}


def _decoded(item: dict[str, Any], data: bytes) -> np.ndarray:
    source = read_source(data, item["input"])
    image = source.image
    if source.channels != 1 or image.dtype.kind == "f" and image.size and (image.min() < 0 or image.max() > 1):
        raise DatasetError(f"{item['input']} is not a gray image in [0, 1] or an integer dtype; run prepare first")
    return image


def _write(item: dict[str, Any], image: np.ndarray, unit: np.ndarray) -> tuple[dict[str, bytes], dict]:
    result = _UNIT.invert(np.clip(unit, 0.0, 1.0), image.dtype)
    suffix = Path(item["input"]).suffix.lower()
    data = encode_tiff(result) if suffix in (".tif", ".tiff") else encode_image(result, suffix)
    return {item["input"]: data}, {"image": item["input"]}


def enhance_image(item: dict[str, Any], data: bytes, params: dict[str, Any]) -> tuple[dict[str, bytes], dict]:
    image = _decoded(item, data)
    unit, extra = enhance_array(as_unit_float(image), params["op"], params["op_params"])
    files, columns = _write(item, image, unit)
    return files, {**columns, **extra}


def fix_image(item: dict[str, Any], data: bytes, params: dict[str, Any]) -> tuple[dict[str, bytes], dict]:
    image = _decoded(item, data)
    unit = as_unit_float(image)
    p99 = float(np.percentile(unit, 99))
    if p99 >= params["threshold"]:
        return {item["input"]: data}, {"image": item["input"], "p99_fraction": p99, "fixed": False}
    stretch = Transform("percentile", {"p_lo": params["p_low"], "p_hi": params["p_high"], "log1p": False})
    files, columns = _write(item, image, stretch.apply(unit))
    return files, {**columns, "p99_fraction": p99, "fixed": True}


def _job_over_dataset(kind: str, source: str | Path, params: dict[str, Any], process: Any) -> FileJob:
    root = Path(source).expanduser().absolute()
    table = read_manifest(root)
    if "image" not in table.column_names:
        raise DatasetError(f"the manifest of {root} has no 'image' column")
    info = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
    rows = table.to_pylist()
    items, passthrough = [], []
    for position, row in enumerate(rows):
        row = {k: v for k, v in row.items() if k != "input_sha256"}
        row.setdefault("index", position)
        row.setdefault("split", DEFAULT_SPLIT)  # a manifest without splits has every row in train
        (items if row.get("image") else passthrough).append({**row, "input": row.get("image")})
    for row in passthrough:
        row.pop("input")
    provenance = {"source_dataset": {"path": str(root), "kind": info.get("kind"),
                                     "config_hash": info.get("config_hash")}}
    return FileJob(kind, {**params, "source_dataset": str(root)}, root, items, process, provenance, passthrough)


def enhance(source: str | Path, out: str | Path, op: str, op_params: dict[str, Any] | None = None, *,
            workers: int | None = None, overwrite: bool = False, address: str | None = None) -> JobSummary:
    """Enhance every image of the dataset ``source`` into the new dataset ``out``.

    Raises:
        ConfigError: an unknown op or invalid parameter. DatasetError: an unreadable source dataset.
    """
    params = {"op": op, "op_params": check_enhance(op, op_params or {})}
    return run_job(_job_over_dataset("enhance", source, params, enhance_image), out, workers=workers,
                   overwrite=overwrite, address=address)


def fix(source: str | Path, out: str | Path, *, threshold: float = 0.1, p_low: float = 0.1, p_high: float = 99.9,
        workers: int | None = None, overwrite: bool = False, address: str | None = None) -> JobSummary:
    """Re-stretch (percentile ``p_low``/``p_high``) the images of ``source`` whose 99th percentile
    uses less than ``threshold`` of their range; copy the others unchanged.

    Raises:
        ConfigError: a threshold outside (0, 1] or invalid percentiles.
    """
    if not 0 < threshold <= 1:
        raise ConfigError(f"--threshold must be in (0, 1], got {threshold}")
    Transform("percentile", {"p_lo": float(p_low), "p_hi": float(p_high), "log1p": False})
    params = {"threshold": float(threshold), "p_low": float(p_low), "p_high": float(p_high)}
    return run_job(_job_over_dataset("fix", source, params, fix_image), out, workers=workers,
                   overwrite=overwrite, address=address)
