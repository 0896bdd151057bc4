"""Stored batch-size recommendations, applied by ``microforge train`` when no batch size is given.

``<state dir>/batch_size_recommendations.json`` holds one record per (device, device memory,
workload, preset, resolution, precision): the device is the GPU's name or ``"cpu"``, the device
memory the GPU's total memory or, on CPUs, the memory budget of the search; the workload is its
canonical name (records written under an alias, e.g. ``unet``, are read as the workload it names)
and the precision Lightning's name (:mod:`microforge.platform.precision`). A new search replaces
the records it measured and keeps the others. The batch applied is the one with the best
samples/s (``best_batch``), which never exceeds the largest that fits (``max_batch``).

A search that compared several presets at one resolution marks one record there
``recommended``: the preset a run at that resolution uses when neither its preset nor its batch
size is given. A later comparison at the same key moves the mark; re-measuring one preset keeps it.

This module imports neither torch nor Ray at module level: the train command reads it cheaply.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from microforge.platform.errors import ConfigError, MicroforgeError
from microforge.platform.precision import resolve_precision
from microforge.platform.storage import atomic_write_text, state_dir

__all__ = [
    "RECOMMENDATIONS_FILE",
    "Recommendation",
    "find_recommendation",
    "load_recommendations",
    "local_device",
    "recommendations_path",
    "recommended_batch_size",
    "recommended_preset",
    "save_recommendations",
]

log = logging.getLogger(__name__)

RECOMMENDATIONS_FILE = "batch_size_recommendations.json"
FORMAT = 1
# GPUs of one model report slightly different totals across drivers and MIG settings.
MEMORY_MATCH_TOLERANCE = 0.02


class RecommendationError(MicroforgeError):
    """The recommendations file cannot be read."""


@dataclass(frozen=True)
class Recommendation:
    """One measured batch size (see the module doc for the key)."""

    workload: str
    preset: str
    resolution: int
    precision: str
    device: str
    device_memory_bytes: int
    max_batch: int
    best_batch: int
    samples_per_s: float
    step_time_s: float
    peak_memory_bytes: int | None
    capped: bool = False
    measured: str = ""
    recommended: bool = False

    def key(self) -> tuple:
        return (self.device, self.device_memory_bytes, self.workload, self.preset, self.resolution, self.precision)

    def group(self) -> tuple:
        """The key without the preset: the records one preset recommendation chooses among."""
        return (self.device, self.device_memory_bytes, self.workload, self.resolution, self.precision)

    def describe_device(self) -> str:
        memory = f"{self.device_memory_bytes / 2**30:.1f} GiB"
        return f"{self.device} ({memory} budget)" if self.device == "cpu" else f"{self.device} ({memory})"


def recommendations_path() -> Path:
    return state_dir() / RECOMMENDATIONS_FILE


def load_recommendations(path: str | Path | None = None) -> list[Recommendation]:
    """Every stored recommendation ([] when there is no file).

    Raises:
        RecommendationError: the file exists but is not a recommendations file.
    """
    path = Path(path) if path else recommendations_path()
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        names = {f.name for f in fields(Recommendation)}
        canonical = _workload_aliases()
        return [Recommendation(**{k: v for k, v in _upgrade(record, canonical).items() if k in names})
                for record in data["recommendations"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecommendationError(f"{path} is not a batch-size recommendations file ({exc}); "
                                  "delete it to start afresh") from None


def save_recommendations(new: Iterable[Recommendation], path: str | Path | None = None) -> Path:
    """Add ``new`` to the store, replacing records with the same key; atomic write.

    Returns:
        The file written.
    """
    path = Path(path) if path else recommendations_path()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new = [r if r.measured else replace(r, measured=now) for r in new]
    moved = {r.group() for r in new if r.recommended}
    merged = {r.key(): replace(r, recommended=r.recommended and r.group() not in moved)
              for r in load_recommendations(path)}
    for record in new:
        old = merged.get(record.key())
        kept = old is not None and old.recommended  # re-measuring the recommended preset alone keeps the mark
        merged[record.key()] = replace(record, recommended=record.recommended or kept)
    records = sorted(merged.values(), key=lambda r: tuple(str(k) for k in r.key()))
    atomic_write_text(path, json.dumps({"format": FORMAT, "recommendations": [asdict(r) for r in records]},
                                       indent=2) + "\n")
    return path


def _upgrade(record: dict, canonical: dict[str, str]) -> dict:
    """Records written before workloads named the workload ``trainer``, or under an alias."""
    record = {"workload": record["trainer"], **record} if "trainer" in record else dict(record)
    record["workload"] = canonical.get(record["workload"], record["workload"])
    return record


def _workload_aliases() -> dict[str, str]:
    """alias -> canonical name of every registered workload ({} when the registry cannot load,
    so a broken plugin does not hide every recommendation)."""
    from microforge.trainers.workload import workloads  # imported late: the registry sits above platform

    try:
        return {alias: w.name for w in workloads().values() for alias in w.aliases}
    except MicroforgeError as exc:
        log.warning("workload aliases unknown (%s): recommendations keep their stored names", exc)
        return {}


def physical_memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def local_device(use_gpu: bool) -> tuple[str, int] | None:
    """``(name, total memory)`` of this machine's first CUDA GPU, or None when it has none.

    For ``use_gpu=False`` returns ``("cpu", physical memory)``.
    """
    if not use_gpu:
        return "cpu", physical_memory_bytes()
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), int(torch.cuda.get_device_properties(0).total_memory)


def find_recommendation(workload: str, preset: str | None, resolution: int, precision: str, *, device: str,
                        device_memory_bytes: int, path: str | Path | None = None) -> Recommendation | None:
    """The stored recommendation for this key, or None; ``preset=None``: the record marked
    ``recommended`` at this resolution (the preset to train), if any.

    On a GPU the memory must match (within 2 %). For ``device="cpu"`` ``device_memory_bytes`` is
    the machine's memory and the record with the largest budget that fits in it is chosen.
    """
    candidates = [r for r in load_recommendations(path)
                  if (r.workload, r.resolution, r.precision, r.device) == (workload, resolution, precision, device)
                  and (r.preset == preset if preset is not None else r.recommended)]
    if device == "cpu":
        fitting = [r for r in candidates if r.device_memory_bytes <= device_memory_bytes]
        return max(fitting, key=lambda r: r.device_memory_bytes, default=None)
    return next((r for r in candidates
                 if abs(r.device_memory_bytes - device_memory_bytes) <= MEMORY_MATCH_TOLERANCE * device_memory_bytes),
                None)


def recommended_preset(workload: str, resolution: int, precision: str, *, use_gpu: bool) -> Recommendation | None:
    """The record of the preset recommended at ``resolution`` on this machine's device (its
    ``preset`` and ``best_batch`` go together), or None; matched as :func:`recommended_batch_size`."""
    return recommended_batch_size(workload, None, resolution, precision, use_gpu=use_gpu)


def recommended_batch_size(workload: str, preset: str | None, resolution: int, precision: str, *,
                           use_gpu: bool) -> Recommendation | None:
    """The recommendation for a training run on this machine's device, or None (``preset=None``:
    the recommended preset's record).

    A GPU run is matched by the local GPU's name and memory (None when this process sees no GPU,
    e.g. a driver on a login node); a CPU run by the largest CPU budget within physical memory.
    """
    found = local_device(use_gpu)
    if found is None:
        log.info("no local GPU to match batch-size recommendations against")
        return None
    device, memory = found
    try:
        precision = resolve_precision(precision, use_gpu)
    except ConfigError:
        return None  # a spelling no search stores matches no record
    return find_recommendation(workload, preset, resolution, precision, device=device, device_memory_bytes=memory)
