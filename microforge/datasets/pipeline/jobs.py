"""A resumable Ray Data job that turns files into a dataset directory, shared by prepare, enhance
and fix.

Each item (one input file) is processed in a Ray Data task by a pure function of the file's bytes
and the job's parameters, which returns the files to write and the item's manifest columns. As
with :mod:`microforge.datasets.writer`, a per-item meta file (written last, atomically) marks an
item complete; a re-run reuses it when the parameters, the input file (its SHA-256) and the
written files still match, and processes the rest. The driver then writes ``manifest.parquet``
(rows sorted by index) and the completed ``dataset.json``. Nothing depends on the number of
workers or on time, so the directory is byte-identical however the job was sharded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ... import __version__
from ...platform.errors import DatasetError, MicroforgeError
from ...platform.runtime import ray_runtime, single_stage
from ...platform.storage import ensure_writable_dir
from ..store import Store
from ..writer import DatasetKind, batch_result, commit_sample, finish_dataset, load_complete_row, prepare_directory

log = logging.getLogger(__name__)

PIPELINE_VERSION = "1"
ERROR_SPLIT = "error"  # the split of rows whose input could not be read: never train, val or test

# (item, input bytes, params) -> (files by relative path, manifest columns); must be pure.
Process = Callable[[dict[str, Any], bytes, dict[str, Any]], "tuple[dict[str, bytes], dict[str, Any]]"]


@dataclass(frozen=True)
class FileJob:
    """``items``: JSON rows with ``index``, ``input`` (a path relative to ``input_root``) and any
    columns to carry into the manifest; ``params``: the JSON parameters (the job's identity)."""

    kind: str
    params: dict[str, Any]
    input_root: Path
    items: Sequence[dict[str, Any]]
    process: Process
    provenance: dict[str, Any] = field(default_factory=dict)
    passthrough: Sequence[dict[str, Any]] = ()  # rows copied into the manifest unprocessed

    def config_hash(self) -> str:
        canonical = json.dumps({"kind": self.kind, "params": self.params}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class JobSummary:
    out: Path
    rows: list[dict[str, Any]]
    processed: int
    reused: int
    seconds: float

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("error")]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _process_chunks(batch: dict[str, np.ndarray], **job: Any) -> dict[str, np.ndarray]:
    """Ray Data UDF (a task, so that the worker processes stay warm from job to job)."""
    return ItemProcessor(**job)(batch)


class ItemProcessor:
    """Processes (or verifies and reuses) chunks of items; one JSON row per item.

    Keeps OpenCV on one thread: each task holds one CPU, and OpenCV's own thread pool would make
    the workers fight over the cores.
    """

    def __init__(self, *, process: Process, params: dict[str, Any], input_root: str, out: str,
                 config_hash: str) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.process, self.params, self.input_root = process, params, Path(input_root)
        self.out, self.config_hash = Store(out), config_hash

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows, reused = [], []
        for chunk in batch["items"].tolist():
            for item in json.loads(chunk):
                row, was_reused = self._item(item)
                rows.append(row)
                reused.append(was_reused)
        return batch_result(rows, reused)

    def _item(self, item: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        carried = {k: v for k, v in item.items() if k != "input"}
        try:
            data = (self.input_root / item["input"]).read_bytes()
        except OSError as exc:
            data, digest = None, None
            failure = f"cannot read {item['input']} ({exc.strerror or exc})"
        else:
            digest = _sha256(data)
        row = load_complete_row(self.out, item["index"], self.config_hash)
        if row is not None and row.get("input_sha256") == digest:
            return row, True
        files: dict[str, bytes] = {}
        if data is None:
            columns = {"image": None, "error": failure}
        else:
            try:
                files, columns = self.process(item, data, self.params)
                columns = {"error": None, **columns}
            except DatasetError as exc:  # an unreadable input: a row with the error, never a stopped job
                columns = {"image": None, "error": str(exc)}
        row = {**carried, "input_sha256": digest, **columns}
        if row.get("error"):
            row["split"] = ERROR_SPLIT
        commit_sample(self.out, item["index"], self.config_hash, row, files)
        return row, False


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with every column (None where missing), columns sorted: one Parquet schema."""
    names = sorted({k for r in rows for k in r})
    return [{k: r.get(k) for k in names} for r in rows]


def run_job(job: FileJob, out: str | Path, *, workers: int | None = None, batch_size: int | None = None,
            overwrite: bool = False, address: str | None = None) -> JobSummary:
    """Run ``job`` into the dataset directory ``out`` with Ray Data; resume what is complete.

    ``batch_size``: items per Ray Data task (default: chosen from the number of items and workers;
    never changes the bytes written).

    Raises:
        MicroforgeError: workers <= 0, an unwritable output, or a directory made by another job
            (unless ``overwrite``); nothing is written in those cases.
        DatasetError: the run ended before every item was processed.
    """
    if workers is not None and workers <= 0:
        raise MicroforgeError(f"--workers must be positive, got {workers}")
    out = ensure_writable_dir(out)
    config_hash = job.config_hash()
    kind = DatasetKind(name=job.kind, config_cls=None, renderer_version=PIPELINE_VERSION,  # type: ignore[arg-type]
                       encode=None, owned_dirs=("images",))  # type: ignore[arg-type]
    record = {"kind": job.kind, "config": job.params, "config_hash": config_hash, "seed": None,
              "options": {}, "renderer_version": PIPELINE_VERSION, "microforge_version": __version__,
              "n": len(job.items) + len(job.passthrough), "status": "incomplete", **job.provenance}
    prepare_directory(out, kind, record, overwrite)

    import ray

    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    if job.items:
        with ray_runtime(address=address, num_cpus=workers):
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            tasks = min(workers or cpus, cpus)
            # Chunks of up to 96 items (~2 s of work at ~20 ms an item), at least two per worker:
            # Ray Data starts a task 0.05-0.3 s after the last one ended on that worker (a task
            # per 4 items cost about as much as their work; per 32, a fifth).
            size = batch_size or max(1, min(96, len(job.items) // (2 * tasks)))
            chunks = [json.dumps(list(job.items[i:i + size]), sort_keys=True) for i in range(0, len(job.items), size)]
            ds = ray.data.from_items([{"items": c} for c in chunks], override_num_blocks=len(chunks))
            ds = ds.map_batches(
                _process_chunks, batch_size=1, num_cpus=1,
                compute=ray.data.TaskPoolStrategy(size=min(tasks, len(chunks))),
                fn_kwargs={"process": job.process, "params": job.params, "input_root": str(job.input_root),
                           "out": str(out), "config_hash": config_hash},
            )
            results = list(single_stage(ds).iter_rows())
    seconds = time.perf_counter() - start
    if len(results) != len(job.items):
        raise DatasetError(f"{job.kind} stopped after {len(results)} of {len(job.items)} images; "
                           "re-run the same command to complete the dataset")
    rows = [json.loads(r["row"]) for r in results] + [dict(r) for r in job.passthrough]
    rows = _uniform(sorted(rows, key=lambda r: r["index"]))
    reused = sum(bool(r["reused"]) for r in results)
    finish_dataset(kind, out, record, rows, _NO_OPTIONS)
    return JobSummary(out, rows, len(results) - reused, reused, seconds)


class _Options:
    """The writer's ``finish_dataset`` reads options only through a kind's ``finalize`` (none here)."""


_NO_OPTIONS: Any = _Options()
