"""``compare_image_sets``: features, distances and statistics of two image sets, and the report.

Each image is decoded once and measured once: its feature vector (for the Fréchet distance and
KID), its texture and morphology statistics, and its intensity histogram. Small sets (up to
:data:`IN_PROCESS_LIMIT` images in all, or ``workers=0``) are measured in this process; larger
ones by a Ray Data job, ``map_batches`` over the file paths with one actor per worker (each
builds the extractor once). Every input error is raised before anything is written.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.manifest import decode_image
from ..platform.errors import ConfigError, DatasetError, MicroforgeError
from .distances import frechet_distance, gaussian_stats, kernel_distance
from .features import FeatureSpec, build_extractor, parse_feature_spec
from .images import ImageSet, channels_of, find_images, grey, to_float
from .report import intensity_histogram, write_report
from .statistics import SCALAR_STATISTICS, image_statistics, statistic_distances

__all__ = ["IN_PROCESS_LIMIT", "compare_image_sets", "measure_images"]

log = logging.getLogger(__name__)

IN_PROCESS_LIMIT = 200
BATCH_SIZE = 16


def _measure(paths: list[str], extractor: Any) -> dict[str, np.ndarray]:
    """Features, statistics, histogram and channel count of each file; an undecodable file gives
    its error in ``error`` (and zeros) rather than stopping the batch."""
    raws, errors = [], []
    for path in paths:
        try:
            raws.append(decode_image(path))
            errors.append("")
        except MicroforgeError as exc:
            raws.append(np.zeros((8, 8), np.float32))
            errors.append(str(exc))
    floats = [grey(to_float(raw)) for raw in raws]
    caches: list[dict] = [{} for _ in raws]
    measured = [image_statistics(x, cache) for x, cache in zip(floats, caches)]
    if hasattr(extractor, "from_grey"):  # texture: shares LBP and GLCM with the statistics
        features = np.stack([extractor.from_grey(x, cache) for x, cache in zip(floats, caches)])
    else:
        features = extractor(raws)
    return {
        "features": np.asarray(features, dtype=np.float64),
        **{name: np.array([m[0][name] for m in measured]) for name in SCALAR_STATISTICS},
        "object_areas": np.array([json.dumps(m[1].tolist()) for m in measured]),
        "intensity_hist": np.stack([intensity_histogram(x) for x in floats]),
        "channels": np.array([channels_of(raw) for raw in raws], np.int64),
        "error": np.array(errors),
    }


class _BatchMeasure:
    """The Ray Data actor: builds the extractor once, measures batches of paths."""

    def __init__(self, spec: str) -> None:
        self.extractor = build_extractor(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = _measure([str(p) for p in batch["path"]], self.extractor)
        out["order"] = np.asarray(batch["order"])
        return out


def measure_images(paths: list[Path], spec: FeatureSpec, *, workers: int | None = None,
                   address: str | None = None, extractor: Any = None) -> dict[str, np.ndarray]:
    """:func:`_measure` of every path, in order: in this process for ``workers == 0`` (or a small
    set when ``workers`` is None), else with Ray Data on ``workers`` actors (default: every CPU)."""
    if workers == 0 or (workers is None and len(paths) <= IN_PROCESS_LIMIT):
        extractor = extractor or build_extractor(spec)
        parts = [_measure([str(p) for p in paths[i:i + BATCH_SIZE]], extractor)
                 for i in range(0, len(paths), BATCH_SIZE)]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    import ray

    from ..platform.runtime import ray_runtime, single_stage

    with ray_runtime(address=address, num_cpus=workers):
        actors = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = ray.data.from_items([{"path": str(p), "order": i} for i, p in enumerate(paths)],
                                 override_num_blocks=max(actors, -(-len(paths) // (BATCH_SIZE * 4))))
        ds = ds.map_batches(_BatchMeasure, fn_constructor_kwargs={"spec": str(spec)}, batch_size=BATCH_SIZE,
                            batch_format="numpy", concurrency=actors, num_cpus=1)
        parts = list(single_stage(ds, actors=True).iter_batches(batch_size=None, batch_format="numpy"))
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.argsort(merged.pop("order"), kind="stable")
    return {key: value[order] for key, value in merged.items()}


def _check_measured(image_set: ImageSet, measured: dict[str, np.ndarray], role: str) -> None:
    bad = [(p, e) for p, e in zip(image_set.paths, measured["error"]) if e]
    if bad:
        raise DatasetError(f"{role}: {len(bad)} image(s) cannot be read, e.g. {bad[0][1]}")
    odd = [(p, c) for p, c in zip(image_set.paths, measured["channels"]) if c != image_set.channels]
    if odd:
        raise ConfigError(f"{role} {image_set.root} mixes channel counts: {image_set.paths[0].name} has "
                          f"{image_set.channels}, {odd[0][0].name} has {odd[0][1]}")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").is_file())):
        raise ConfigError(f"--out {out} exists and is not an 'eval images' report directory; "
                          "name a new or empty directory")


def compare_image_sets(real: str | Path, fake: str | Path, out: str | Path, *, features: str = "texture",
                       max_images: int | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000,
                       workers: int | None = None, address: str | None = None) -> dict[str, Any]:
    """Compare two image sets and write ``report.json``, ``samples.png`` and ``histograms.png``
    to ``out`` (replaced atomically). Returns the report.

    Raises:
        ConfigError: an unknown feature spec, an unreadable weights file, an empty set, sets of
            different channel counts, bad KID sizes, or an ``out`` that is another directory.
        DatasetError: an unreadable image or dataset.
        ArtifactError: an ``artifact:`` spec whose artifact does not load.
    """
    start = time.perf_counter()
    spec = parse_feature_spec(features)
    if kid_subsets < 1 or kid_subset_size < 2:
        raise ConfigError(f"--kid-subsets must be >= 1 and --kid-subset-size >= 2, "
                          f"got {kid_subsets} and {kid_subset_size}")
    if max_images is not None and max_images < 2:
        raise ConfigError(f"--max-images must be at least 2, got {max_images}")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    out = Path(out)
    _check_out(out)
    sets = (find_images(real, max_images=max_images, role="REAL"), find_images(fake, max_images=max_images,
                                                                              role="FAKE"))
    for image_set, role in zip(sets, ("REAL", "FAKE")):
        if len(image_set.paths) < 2:
            raise ConfigError(f"{role} {image_set.root} holds {len(image_set.paths)} image; at least 2 are needed")
    if sets[0].channels != sets[1].channels:
        raise ConfigError(f"REAL images have {sets[0].channels} channel(s) and FAKE images "
                          f"{sets[1].channels}; compare sets with the same channel count")
    extractor = build_extractor(spec)  # a bad weights file or artifact fails here, before any work
    paths = [*sets[0].paths, *sets[1].paths]
    measured = measure_images(paths, spec, workers=workers, address=address, extractor=extractor)
    n_real = len(sets[0].paths)
    halves = ({k: v[:n_real] for k, v in measured.items()}, {k: v[n_real:] for k, v in measured.items()})
    for image_set, half, role in zip(sets, halves, ("REAL", "FAKE")):
        _check_measured(image_set, half, role)
    real_f, fake_f = halves[0]["features"], halves[1]["features"]
    fd = frechet_distance(*gaussian_stats(real_f), *gaussian_stats(fake_f))
    kid_mean, kid_std = kernel_distance(real_f, fake_f, subsets=kid_subsets, subset_size=kid_subset_size)
    values = []
    for half in halves:
        v = {name: half[name] for name in SCALAR_STATISTICS}
        v["object_area"] = np.concatenate([np.asarray(json.loads(s), np.float64) for s in half["object_areas"]])
        values.append(v)
    stats = statistic_distances(*values)
    report = {
        "frechet_distance": fd,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "features": str(spec),
        "feature_dim": int(real_f.shape[1]),
        "kid_subsets": kid_subsets,
        "kid_subset_size": int(min(kid_subset_size, len(sets[0].paths), len(sets[1].paths))),
        "statistic_distances": {name: entry["wasserstein"] for name, entry in stats.items()},
        "statistics": stats,
        "real": {"path": str(sets[0].root), "images": n_real, "channels": sets[0].channels},
        "fake": {"path": str(sets[1].root), "images": len(sets[1].paths), "channels": sets[1].channels},
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_report(out, report, sets, values, [h["intensity_hist"].sum(axis=0) for h in halves])
    return report
