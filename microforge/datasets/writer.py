"""Sharded, resumable dataset generation with Ray Data, shared by every renderer.

A dataset (a directory, or a prefix on an object store: :mod:`.store`) has one of two layouts:

* ``files``: per sample, the files its kind encodes (``images/0000042.png``, label files, ...)
  and ``meta/0000042.json`` (seed, index, split, renderer outputs, SHA-256 of each file);
* ``shards``: WebDataset tar shards ``shards/000003.tar`` of ``shard_size`` consecutive samples
  (:mod:`.shards`) and ``meta/shard-000003.json`` (the shard's rows, size and SHA-256).

The meta file is written last, atomically, so it marks its sample (or shard) complete: a re-run
re-renders only what has no meta file or no longer matches it. At the end the driver writes
``manifest.parquet`` (one row per sample, sorted by index; in the shards layout each row also
names its shard and byte range), for the files layout the split lists, and ``dataset.json``
(config, config hash, options, versions).

Every sample is a pure function of (config, seed, index), and a shard of its indices, so nothing
written depends on the number of workers, chunks or time: the dataset is byte-identical however
it was scheduled.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .. import __version__
from ..platform.config import ConfigModel, suggest
from ..platform.errors import DatasetError, MicroforgeError
from ..platform.runtime import ray_runtime, single_stage
from .commits import (META_DIR, as_store, commit_sample, load_complete_row, load_complete_shard, meta_path,
                      sample_stem, sha256, shard_meta_rel)
from .images import FAST_PNG, parse_png_level
from .shards import SHARDS_DIR, ShardBuilder, shard_count, shard_indices, shard_path
from .store import Store, open_store

__all__ = ["DEFAULT_SHARD_SIZE", "FAST_PNG", "IMAGE_FORMATS", "LAYOUTS", "SPLIT_NAMES", "ChunkWriter", "DatasetError",
           "DatasetKind", "EncodedSample", "GenerationOptions", "GenerationSummary", "batch_result", "collect_rows",
           "commit_sample", "finish_dataset", "generate", "load_complete_row", "meta_path", "parse_split",
           "prepare_directory", "sample_stem", "split_of"]

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg", "tif": ".tif"}
LAYOUTS = ("files", "shards")
DEFAULT_SHARD_SIZE = 128
# Entries the writer owns in a dataset directory (removed by overwrite=True, nothing else is).
OWNED_ROOT_FILES = ("dataset.json", "manifest.parquet", "train.txt", "val.txt", "test.txt")
# Salt that keeps the split draw independent of the renderer's own streams for the same index.
_SPLIT_STREAM = 0x5B117
# Ray Data blocks of a job: enough per worker to balance the load, few enough that a job of
# millions of samples does not put a block per chunk in the object store.
_MAX_BLOCKS = 1024


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
    pure. ``finalize(store, rows, options)`` writes dataset-level files (e.g. ``classes.txt``,
    with ``store.write_text``) and returns a summary dict. ``owned_dirs`` lists the
    sub-directories the kind writes into.
    """

    name: str
    config_cls: type[ConfigModel]
    renderer_version: str
    encode: Callable[[ConfigModel, int, int, "GenerationOptions"], EncodedSample]
    owned_dirs: tuple[str, ...]
    finalize: Callable[[Store, list[dict[str, Any]], "GenerationOptions"], dict[str, Any]] | None = None
    extra_owned_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationOptions:
    """Options that shape the files written; all of them are part of the dataset's identity.

    ``png_level``: ``"fast"`` or a zlib level 0-9 (:func:`.images.parse_png_level`); None leaves
    PNG encoding to the kind (kinds that predate the option). ``layout``: ``files`` or
    ``shards``; ``shard_size``: samples per shard (shards layout only).
    """

    image_format: str = "png"
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    extra: Mapping[str, Any] = field(default_factory=dict)
    png_level: int | str | None = None
    layout: str = "files"
    shard_size: int = DEFAULT_SHARD_SIZE

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
        if self.layout not in LAYOUTS:
            raise MicroforgeError(f"unknown layout '{self.layout}'{suggest(self.layout, LAYOUTS)}; "
                                  f"valid: {', '.join(LAYOUTS)}")
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int) or self.shard_size <= 0:
            raise MicroforgeError(f"--shard-size must be a positive number of samples, got {self.shard_size}")
        if self.png_level is not None:
            object.__setattr__(self, "png_level", parse_png_level(self.png_level))

    def identity(self) -> dict[str, Any]:
        # Keys are added only when set, so datasets written before an option existed still resume.
        identity = {"image_format": self.image_format, "split": list(self.split), **dict(self.extra)}
        if self.png_level is not None:
            identity["png_level"] = self.png_level
        if self.layout != "files":
            identity.update(layout=self.layout, shard_size=self.shard_size)
        return identity


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


def batch_result(rows: Sequence[dict[str, Any]], reused: Sequence[bool],
                 seconds: Sequence[Mapping[str, float]] | None = None) -> dict[str, np.ndarray]:
    """What a Ray Data UDF of a resumable job returns: one JSON row (and whether it was reused)
    per sample, and optionally where its worker's time went; :func:`collect_rows` reads it back
    on the driver."""
    result = {"row": np.array([json.dumps(r, sort_keys=True) for r in rows], dtype=object),
              "reused": np.array(reused, dtype=bool)}
    if seconds is not None:
        result["seconds"] = np.array([json.dumps(s) for s in seconds], dtype=object)
    return result


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


def _stage_seconds(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Worker seconds per stage, summed over every sample of a job."""
    totals: dict[str, float] = {}
    for r in results:
        for stage, seconds in json.loads(r.get("seconds") or "{}").items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return totals


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


def _layout(record: Mapping[str, Any]) -> str:
    options = record.get("options")
    return options.get("layout", "files") if isinstance(options, dict) else "files"


def prepare_directory(out: Store | str | Path, kind: DatasetKind, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse a dataset made with another config or layout (unless overwrite), or a non-empty
    location that is not a dataset; else record ours."""
    store = as_store(out)
    names = store.names()
    if "dataset.json" in names:
        try:
            existing = json.loads(store.read_bytes("dataset.json"))
        except ValueError:
            existing = {}
        if _layout(existing) != _layout(record) and not overwrite:
            raise DatasetError(f"{store} holds a dataset in the '{_layout(existing)}' layout, not "
                               f"'{_layout(record)}'; resume it with --layout {_layout(existing)}, "
                               "or pass --overwrite to replace it")
        differs = [k for k in _IDENTITY_KEYS if existing.get(k) != record[k]]
        if differs and not overwrite:
            raise DatasetError(
                f"{store} holds a dataset made with a different {', '.join(differs)}; "
                "choose another --out or pass --overwrite to replace it"
            )
        if differs:
            remove_dataset_files(store, kind)
    elif names:
        raise DatasetError(f"{store} is not empty and is not a microforge dataset; choose an empty or new directory")
    store.write_text("dataset.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def remove_dataset_files(out: Store | str | Path, kind: DatasetKind) -> None:
    """Remove what the writer owns in ``out`` and nothing else."""
    store = as_store(out)
    log.info("overwriting the dataset in %s", store)
    for name in (*kind.owned_dirs, META_DIR, SHARDS_DIR, *OWNED_ROOT_FILES, *kind.extra_owned_files):
        store.remove(name)


@dataclass(frozen=True)
class GenerationSummary:
    out: Path | str
    n: int
    rendered: int
    reused: int
    seconds: float
    counts: dict[str, Any]
    startup_seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # worker seconds per stage, all workers

    @property
    def images_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else float("nan")

    def report(self, labels: str) -> str:
        """What ``microforge synth`` prints: the directory, counts and splits, ``labels``, timing."""
        counts = self.counts
        startup = f" (Ray start-up {self.startup_seconds:.1f} s)" if self.startup_seconds >= 0.05 else ""
        return "\n".join([
            f"dataset: {self.out}",
            f"images: {self.n} ({self.rendered} rendered, {self.reused} already complete); "
            f"splits: train {counts['train']}, val {counts['val']}, test {counts['test']}",
            f"labels: {labels}",
            f"time: {self.seconds:.1f} s{startup}, {self.images_per_second:.2f} images/s",
        ])


def _write_chunks(batch: dict[str, np.ndarray], **job: Any) -> dict[str, np.ndarray]:
    """Ray Data UDF (a task, so that the worker processes stay warm from job to job)."""
    return ChunkWriter(**job)(batch)


class ChunkWriter:
    """Renders whole chunks of consecutive indices and commits them; a chunk is one shard in the
    shards layout, else a few samples each committed on its own.

    Keeps OpenCV on one thread: each task holds one CPU, and OpenCV's own thread pool would make
    the workers fight over the cores.
    """

    def __init__(self, *, kind: DatasetKind, config_json: dict, seed: int, options: GenerationOptions,
                 store: Store, n: int, chunk_size: int) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.kind, self.seed, self.options, self.store = kind, seed, options, store
        self.config = kind.config_cls.load(config_json)
        self.config_hash = self.config.config_hash()
        self.n, self.chunk_size = n, chunk_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[dict[str, Any]] = []
        reused: list[bool] = []
        seconds: list[dict[str, float]] = []
        for chunk in batch["chunk"].tolist():
            indices = shard_indices(int(chunk), self.n, self.chunk_size)
            write = self._shard if self.options.layout == "shards" else self._files
            done, fresh, spent = write(int(chunk), indices)
            rows += done
            reused += [not f for f in fresh]
            seconds += [{stage: s / len(done) for stage, s in spent.items()}] * len(done)
        return batch_result(rows, reused, seconds)

    def _encode(self, index: int) -> tuple[dict[str, Any], dict[str, bytes]]:
        sample = self.kind.encode(self.config, self.seed, index, self.options)
        row = {"index": index, "seed": self.seed, "split": split_of(self.seed, index, self.options.split),
               **sample.columns}
        return row, sample.files

    def _files(self, chunk: int, indices: range) -> tuple[list[dict[str, Any]], list[bool], dict[str, float]]:
        rows, fresh = [], []
        spent = {"verify": 0.0, "encode": 0.0, "write": 0.0}
        for index in indices:
            t0 = time.perf_counter()
            row = load_complete_row(self.store, index, self.config_hash)
            t1 = time.perf_counter()
            spent["verify"] += t1 - t0
            fresh.append(row is None)
            if row is None:
                row, files = self._encode(index)
                t2 = time.perf_counter()
                commit_sample(self.store, index, self.config_hash, row, files)
                spent["encode"] += t2 - t1
                spent["write"] += time.perf_counter() - t2
            rows.append(row)
        return rows, fresh, spent

    def _shard(self, shard: int, indices: range) -> tuple[list[dict[str, Any]], list[bool], dict[str, float]]:
        t0 = time.perf_counter()
        rows = load_complete_shard(self.store, shard, self.config_hash, indices)
        spent = {"verify": time.perf_counter() - t0, "encode": 0.0, "write": 0.0}
        if rows is not None:
            return rows, [False] * len(rows), spent
        # The whole shard, even when one sample is missing: its bytes never depend on what existed.
        builder, rows, rel = ShardBuilder(), [], shard_path(shard)
        for index in indices:
            t1 = time.perf_counter()
            row, files = self._encode(index)
            t2 = time.perf_counter()
            offset, size = builder.add(sample_stem(index), files, json.dumps(row, sort_keys=True).encode())
            rows.append({**row, "shard": rel, "shard_offset": offset, "shard_size": size})
            spent["encode"] += t2 - t1
            spent["write"] += time.perf_counter() - t2
        t3 = time.perf_counter()
        data = builder.finish()
        self.store.write_bytes(rel, data)
        meta = {"config_hash": self.config_hash, "indices": [indices.start, indices.stop], "size": len(data),
                "sha256": sha256(data), "rows": rows}
        self.store.write_text(shard_meta_rel(shard), json.dumps(meta, sort_keys=True, indent=1))
        spent["write"] += time.perf_counter() - t3
        return rows, [True] * len(rows), spent


def _chunk_size(options: GenerationOptions, n: int, workers: int) -> int:
    """A shard, or enough samples that per-call overheads vanish (a chunk of default crystal
    images is ~1 s of work) and still several chunks per worker for an even finish."""
    if options.layout == "shards":
        return options.shard_size
    return max(1, min(16, n // (4 * workers)))


def generate(
    kind: DatasetKind,
    config: ConfigModel,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    options: GenerationOptions | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    address: str | None = None,
) -> GenerationSummary:
    """Render samples ``0..n-1`` of ``kind`` into ``out`` (a path or URI) with Ray Data; resume
    what exists.

    ``workers``: render tasks (default and at most: the cluster's CPUs). ``batch_size``: samples
    per chunk of the files layout (default: chosen from n and workers; never changes the bytes).

    Raises:
        MicroforgeError: n <= 0, workers <= 0, an unwritable output or a URI no installed
            filesystem handles, or a dataset made with another configuration or layout (unless
            ``overwrite``). Nothing is written in those cases.
    """
    options = options or GenerationOptions()
    if n <= 0:
        raise MicroforgeError(f"n must be a positive number of samples, got {n}")
    if workers is not None and workers <= 0:
        raise MicroforgeError(f"workers must be positive, got {workers}")
    if seed < 0:
        raise MicroforgeError(f"seed must be non-negative, got {seed}")
    store = open_store(out, for_writing=True)
    record = _dataset_record(kind, config, seed, n, options)
    try:
        prepare_directory(store, kind, record, overwrite)
    except OSError as exc:  # e.g. a bucket that does not exist, or refused credentials
        raise DatasetError(f"cannot write the dataset to {store}: {str(exc).splitlines()[0]}") from None

    import ray

    start = time.perf_counter()
    with ray_runtime(address=address, num_cpus=workers):
        startup = time.perf_counter() - start
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        tasks = min(workers or cpus, cpus)
        chunk_size = batch_size if batch_size and options.layout == "files" else _chunk_size(options, n, tasks)
        chunks = shard_count(n, chunk_size)
        tasks = min(tasks, chunks)
        ds = ray.data.from_items([{"chunk": c} for c in range(chunks)],
                                 override_num_blocks=min(chunks, max(_MAX_BLOCKS, 4 * tasks)))
        ds = ds.map_batches(
            _write_chunks,
            batch_size=1,
            compute=ray.data.TaskPoolStrategy(size=tasks),
            num_cpus=1,
            fn_kwargs={"kind": kind, "config_json": config.to_json_dict(), "seed": seed,
                       "options": options, "store": store, "n": n, "chunk_size": chunk_size},
        )
        results = list(single_stage(ds).iter_rows())
    seconds = time.perf_counter() - start
    rows, reused = collect_rows(results, n, "generation")
    counts = finish_dataset(kind, store, record, rows, options)
    return GenerationSummary(store.local or str(store), len(rows), len(rows) - reused, reused, seconds, counts,
                             startup, _stage_seconds(results))


def finish_dataset(kind: DatasetKind, out: Store | str | Path, record: dict[str, Any], rows: list[dict[str, Any]],
                   options: GenerationOptions) -> dict[str, Any]:
    """Write the manifest, the split lists (files layout), kind-level files and the completed
    dataset.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = as_store(out)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    store.write_bytes("manifest.parquet", sink.getvalue().to_pybytes())
    if getattr(options, "layout", "files") == "files":  # image paths that exist only in this layout
        for split in SPLIT_NAMES:
            lines = [f"./{r['image']}" for r in rows if r["split"] == split]
            store.write_text(f"{split}.txt", "".join(f"{line}\n" for line in lines))
    counts = {"samples": len(rows), **{s: sum(r["split"] == s for r in rows) for s in SPLIT_NAMES}}
    if getattr(options, "layout", "files") == "shards":
        counts["shards"] = len({r["shard"] for r in rows})
    if kind.finalize is not None:
        counts.update(kind.finalize(store, rows, options))
    record = {**record, "status": "complete", "counts": counts}
    store.write_text("dataset.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    return counts

