"""Sharded, resumable dataset generation with Ray Data, shared by every renderer.

A dataset directory holds, per sample, the files its kind encodes (``images/0000042.png``, label
files, ...) and ``meta/0000042.json`` (seed, index, split, renderer outputs, size and SHA-256 of
each file). The meta file is written last, atomically, so it marks the sample complete: a re-run
re-renders only samples whose meta file is missing or whose files no longer match it. At the end
the driver writes ``manifest.parquet`` (one row per sample, sorted by index), the split lists and
``dataset.json`` (config, config hash, versions).

Every sample is a pure function of (config, seed, index) and nothing written depends on the
number of workers, blocks or time, so the directory is byte-identical however it was sharded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .. import __version__
from ..platform.config import ConfigModel
from ..platform.errors import DatasetError, MicroforgeError
from ..platform.runtime import ray_runtime
from ..platform.storage import atomic_write_bytes, atomic_write_text, ensure_writable_dir

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg", "tif": ".tif"}
META_DIR = "meta"
# Entries the writer owns in a dataset directory (removed by overwrite=True, nothing else is).
OWNED_ROOT_FILES = ("dataset.json", "manifest.parquet", "train.txt", "val.txt", "test.txt")
# Salt that keeps the split draw independent of the renderer's own streams for the same index.
_SPLIT_STREAM = 0x5B117


@dataclass(frozen=True)
class EncodedSample:
    """What a kind produces for one index: file contents by relative path, and manifest columns
    (which must include ``image``, the relative path of the image, for the split lists)."""

    files: dict[str, bytes]
    columns: dict[str, Any]


@dataclass(frozen=True)
class DatasetKind:
    """A renderer plugged into the writer.

    ``encode(config, seed, index, options)`` renders one sample and encodes its files; it must be
    pure. ``finalize(out, rows, options)`` writes dataset-level files (e.g. ``classes.txt``) and
    returns a summary dict. ``owned_dirs`` lists the sub-directories the kind writes into.
    """

    name: str
    config_cls: type[ConfigModel]
    renderer_version: str
    encode: Callable[[ConfigModel, int, int, "GenerationOptions"], EncodedSample]
    owned_dirs: tuple[str, ...]
    finalize: Callable[[Path, list[dict[str, Any]], "GenerationOptions"], dict[str, Any]] | None = None
    extra_owned_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationOptions:
    """Options that shape the files written; all of them are part of the dataset's identity."""

    image_format: str = "png"
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise MicroforgeError(
                f"unknown image format '{self.image_format}'; valid: {', '.join(IMAGE_FORMATS)}"
            )
        split = tuple(float(x) for x in self.split)
        if len(split) != 3 or any(x < 0 for x in split) or abs(sum(split) - 1.0) > 1e-6:
            raise MicroforgeError(
                f"split must be three non-negative fractions summing to 1 (train,val,test), got {list(self.split)}"
            )
        object.__setattr__(self, "split", split)

    def identity(self) -> dict[str, Any]:
        return {"image_format": self.image_format, "split": list(self.split), **dict(self.extra)}


def parse_split(text: str) -> tuple[float, float, float]:
    """Parse ``"0.8,0.1,0.1"`` (the CLI's ``--split``)."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise MicroforgeError(f"--split must be three numbers like 0.8,0.1,0.1, got '{text}'") from None
    if len(parts) != 3:
        raise MicroforgeError(f"--split must be three numbers like 0.8,0.1,0.1, got '{text}'")
    return parts  # type: ignore[return-value]


def split_of(seed: int, index: int, fractions: Sequence[float]) -> str:
    """The split of a sample: a pure function of (seed, index) so it survives resume and sharding."""
    u = np.random.default_rng(np.random.SeedSequence([seed, index, _SPLIT_STREAM])).random()
    edges = np.cumsum(fractions)
    return SPLIT_NAMES[min(int(np.searchsorted(edges, u, side="right")), 2)]


def sample_stem(index: int) -> str:
    return f"{index:07d}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta_path(out: Path, index: int) -> Path:
    return out / META_DIR / f"{sample_stem(index)}.json"


def load_complete_row(out: Path, index: int, config_hash: str) -> dict[str, Any] | None:
    """The sample's manifest row if its meta file exists and every file matches it, else None."""
    path = meta_path(out, index)
    try:
        meta = json.loads(path.read_bytes())
        if meta.get("config_hash") != config_hash:
            return None
        for rel, digest in meta["files"].items():
            if _sha256((out / rel).read_bytes()) != digest:
                return None
        return meta["row"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _render_batch(batch: dict[str, np.ndarray], *, kind: DatasetKind, config_json: dict, seed: int,
                  options: GenerationOptions, out: str) -> dict[str, np.ndarray]:
    """Ray Data UDF: render (or verify and reuse) each index of the batch; one JSON row per index."""
    config = kind.config_cls.load(config_json)
    config_hash = config.config_hash()
    out_dir = Path(out)
    rows: list[dict[str, Any]] = []
    reused: list[bool] = []
    for index in batch["id"].tolist():
        row = load_complete_row(out_dir, index, config_hash)
        reused.append(row is not None)
        if row is None:
            sample = kind.encode(config, seed, index, options)
            row = {"index": index, "seed": seed, "split": split_of(seed, index, options.split), **sample.columns}
            commit_sample(out_dir, index, config_hash, row, sample.files)
        rows.append(row)
    return batch_result(rows, reused)


def commit_sample(out: Path, index: int, config_hash: str, row: dict[str, Any], files: Mapping[str, bytes]) -> None:
    """Write a sample's files, then its meta file (row, config hash, SHA-256 of each file).

    The meta file is written last and atomically: its presence marks the sample complete, and
    :func:`load_complete_row` reuses the row while every file still matches it.
    """
    for rel, data in files.items():
        atomic_write_bytes(out / rel, data)
    meta = {"config_hash": config_hash, "row": row, "files": {rel: _sha256(data) for rel, data in files.items()}}
    atomic_write_text(meta_path(out, index), json.dumps(meta, sort_keys=True, indent=1))


def batch_result(rows: Sequence[dict[str, Any]], reused: Sequence[bool]) -> dict[str, np.ndarray]:
    """What a Ray Data UDF of a resumable job returns: one JSON row (and whether it was reused)
    per sample; :func:`collect_rows` reads it back on the driver."""
    return {"row": np.array([json.dumps(r, sort_keys=True) for r in rows], dtype=object),
            "reused": np.array(reused, dtype=bool)}


def collect_rows(results: Sequence[Mapping[str, Any]], n: int, what: str) -> tuple[list[dict[str, Any]], int]:
    """The manifest rows (sorted by index) of a job's :func:`batch_result` rows and how many were
    reused.

    Raises:
        DatasetError: the rows are not exactly indices ``0..n-1``: an interrupt can end Ray Data's
            iteration early without raising, and a partial run must never get a manifest (or be
            marked complete).
    """
    rows = sorted((json.loads(r["row"]) for r in results), key=lambda r: r["index"])
    if [r["index"] for r in rows] != list(range(n)):
        raise DatasetError(f"{what} stopped after {len(rows)} of {n} samples; "
                           "re-run the same command to complete the dataset")
    return rows, sum(bool(r["reused"]) for r in results)


def _dataset_record(kind: DatasetKind, config: ConfigModel, seed: int, n: int,
                    options: GenerationOptions) -> dict[str, Any]:
    return {
        "kind": kind.name,
        "config": config.to_json_dict(),
        "config_hash": config.config_hash(),
        "seed": seed,
        "n": n,
        "options": options.identity(),
        "renderer_version": kind.renderer_version,
        "microforge_version": __version__,
        "status": "incomplete",
    }


_IDENTITY_KEYS = ("kind", "config_hash", "seed", "options", "renderer_version")


def prepare_directory(out: Path, kind: DatasetKind, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse a directory made with another config (unless overwrite), else record ours."""
    info_path = out / "dataset.json"
    if info_path.exists():
        try:
            existing = json.loads(info_path.read_text())
        except ValueError:
            existing = {}
        differs = [k for k in _IDENTITY_KEYS if existing.get(k) != record[k]]
        if differs and not overwrite:
            raise DatasetError(
                f"{out} holds a dataset made with a different {', '.join(differs)}; "
                "choose another --out or pass --overwrite to replace it"
            )
        if differs:
            remove_dataset_files(out, kind)
    elif out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} is not empty and is not a microforge dataset; choose an empty or new directory")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(info_path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def remove_dataset_files(out: Path, kind: DatasetKind) -> None:
    """Remove what the writer owns in ``out`` and nothing else."""
    log.info("overwriting the dataset in %s", out)
    for name in (*kind.owned_dirs, META_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (*OWNED_ROOT_FILES, *kind.extra_owned_files):
        (out / name).unlink(missing_ok=True)


@dataclass(frozen=True)
class GenerationSummary:
    out: Path
    n: int
    rendered: int
    reused: int
    seconds: float
    counts: dict[str, Any]

    @property
    def images_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else float("nan")

    def report(self, labels: str) -> str:
        """What ``microforge synth`` prints: the directory, counts and splits, ``labels``, timing."""
        counts = self.counts
        return "\n".join([
            f"dataset: {self.out}",
            f"images: {self.n} ({self.rendered} rendered, {self.reused} already complete); "
            f"splits: train {counts['train']}, val {counts['val']}, test {counts['test']}",
            f"labels: {labels}",
            f"time: {self.seconds:.1f} s, {self.images_per_second:.2f} images/s",
        ])


def generate(
    kind: DatasetKind,
    config: ConfigModel,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    options: GenerationOptions | None = None,
    workers: int | None = None,
    batch_size: int = 4,
    overwrite: bool = False,
    address: str | None = None,
) -> GenerationSummary:
    """Render samples ``0..n-1`` of ``kind`` into ``out`` with Ray Data; resume what exists.

    Raises:
        MicroforgeError: n <= 0, workers <= 0, an unwritable output, or a directory made with
            another configuration (unless ``overwrite``). Nothing is written in those cases.
    """
    options = options or GenerationOptions()
    if n <= 0:
        raise MicroforgeError(f"n must be a positive number of samples, got {n}")
    if workers is not None and workers <= 0:
        raise MicroforgeError(f"workers must be positive, got {workers}")
    if seed < 0:
        raise MicroforgeError(f"seed must be non-negative, got {seed}")
    out = ensure_writable_dir(out)
    record = _dataset_record(kind, config, seed, n, options)
    prepare_directory(out, kind, record, overwrite)

    import ray

    start = time.perf_counter()
    with ray_runtime(address=address, num_cpus=workers):
        ds = ray.data.range(n, override_num_blocks=max(1, min(n, -(-n // batch_size))))
        ds = ds.map_batches(
            _render_batch,
            batch_size=batch_size,
            fn_kwargs={"kind": kind, "config_json": config.to_json_dict(), "seed": seed,
                       "options": options, "out": str(out)},
            num_cpus=1,
            concurrency=workers,
        )
        results = list(ds.iter_rows())
    seconds = time.perf_counter() - start
    rows, reused = collect_rows(results, n, "generation")
    counts = finish_dataset(kind, out, record, rows, options)
    return GenerationSummary(out, len(rows), len(rows) - reused, reused, seconds, counts)


def finish_dataset(kind: DatasetKind, out: Path, record: dict[str, Any], rows: list[dict[str, Any]],
            options: GenerationOptions) -> dict[str, Any]:
    """Write the manifest, split lists, kind-level files and the completed dataset.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    atomic_write_bytes(out / "manifest.parquet", sink.getvalue().to_pybytes())
    for split in SPLIT_NAMES:
        lines = [f"./{r['image']}" for r in rows if r["split"] == split]
        atomic_write_text(out / f"{split}.txt", "".join(f"{line}\n" for line in lines))
    counts = {"samples": len(rows), **{s: sum(r["split"] == s for r in rows) for s in SPLIT_NAMES}}
    if kind.finalize is not None:
        counts.update(kind.finalize(out, rows, options))
    record = {**record, "status": "complete", "counts": counts}
    atomic_write_text(out / "dataset.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    return counts
