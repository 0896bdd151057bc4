"""``microforge data embryo image-folder``: one image per (video, phase) of a split, for training.

For each video of the chosen set and each chosen phase it went through, the median frame of that
phase present at the chosen focal plane is copied (bytes unchanged) to ``images/N.jpeg``, its
caption to ``descriptions/N.txt`` (:func:`~.layout.phase_prompt`, the template generation uses
too) and a row to ``metadata.csv`` (``filename,label,phase``, label ``F+00_<video>_<frame>``);
N follows a seeded shuffle (or video, then phase order). The folder is also a microforge dataset:
``manifest.parquet`` (``image``, ``description``, ``phase``, ``phase_index``, ``video``, ``frame``,
``focal``, ``label``, ``split`` = the set, ``source``) and ``dataset.json`` (the class list and the
prompt template), so :func:`microforge.datasets.manifest.manifest_dataset` reads it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ... import __version__
from ...platform.config import suggest
from ...platform.errors import ConfigError, DatasetError
from ..writer import DatasetKind, GenerationOptions, finish_dataset
from .extracted import frames_of, read_annotations
from .files import build_then_move, check_destination
from .layout import DEFAULT_FOCAL, PHASE_INDEX, PHASES, PROMPT_TEMPLATE, check_focal, image_label, phase_prompt
from .split import SPLITS, read_split_file

__all__ = ["IMAGE_FOLDER_KIND", "ImageFolderSummary", "median_frame", "write_image_folder"]

IMAGE_FOLDER_KIND = "embryo_images"
IMAGE_FOLDER_VERSION = "1"
_KIND = DatasetKind(name=IMAGE_FOLDER_KIND, config_cls=None, renderer_version=IMAGE_FOLDER_VERSION,  # type: ignore[arg-type]
                    encode=None, owned_dirs=("images", "descriptions"), extra_owned_files=("metadata.csv",))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ImageFolderSummary:
    out: Path
    images: int
    per_phase: dict[str, int]
    skipped: int  # (video, phase) pairs without a frame at the focal plane

    def report(self) -> str:
        counts = " ".join(f"{p}:{n}" for p, n in self.per_phase.items() if n)
        lines = [f"image folder: {self.out}", f"images: {self.images} ({counts})"]
        if self.skipped:
            lines.append(f"skipped: {self.skipped} phase(s) of a video with no frame at the focal plane")
        return "\n".join(lines)


def median_frame(present: Sequence[int], first: int, last: int) -> int | None:
    """The middle frame (the lower one of an even count) of those present in ``first..last``."""
    inside = sorted(f for f in present if first <= f <= last)
    return inside[(len(inside) - 1) // 2] if inside else None


def _items(root: Path, videos: list[str], phases: list[str], focal: str) -> tuple[list[dict[str, Any]], int]:
    annotations = read_annotations(root)
    unknown = [v for v in videos if v not in annotations]
    if unknown:
        raise DatasetError(f"the split file names {len(unknown)} video(s) that {root} has no annotations for, "
                           f"e.g. {unknown[0]}{suggest(unknown[0], list(annotations))}")
    items, skipped = [], 0
    for video in sorted(videos):
        present = frames_of(root, video, focal)
        for phase, first, last in sorted(annotations[video], key=lambda r: PHASE_INDEX[r[0]]):
            if phase not in phases:
                continue
            frame = median_frame(list(present), first, last)
            if frame is None:
                skipped += 1
                continue
            items.append({"video": video, "phase": phase, "frame": frame, "source": present[frame]})
    return items, skipped


def write_image_folder(extracted: str | Path, split_file: str | Path, set_name: str, phases: Sequence[str],
                       out: str | Path, *, focal: str = DEFAULT_FOCAL, shuffle: bool = True, seed: int = 0,
                       name: str | None = None) -> ImageFolderSummary:
    """Write the image folder of ``set_name`` into ``out`` (missing or empty; see the module doc).

    Raises:
        ConfigError: an unknown set, phase or focal plane, a negative seed.
        DatasetError: a bad split file, videos the extracted dataset lacks, no image to write,
            a non-empty ``out``. Nothing is written in those cases.
    """
    if set_name not in SPLITS:
        raise ConfigError(f"unknown set '{set_name}'{suggest(set_name, SPLITS)}; valid: {', '.join(SPLITS)}")
    for phase in phases:
        if phase not in PHASE_INDEX:
            raise ConfigError(f"unknown phase '{phase}'{suggest(phase, PHASES)}; valid: {' '.join(PHASES)}")
    check_focal(focal)
    if seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {seed}")
    root = Path(extracted).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(f"extracted dataset {root} does not exist")
    split_path = Path(split_file).expanduser()
    videos = read_split_file(split_path)[set_name]
    if not videos:
        raise DatasetError(f"split file {split_path} has no video in '{set_name}'")
    items, skipped = _items(root, videos, list(phases), focal)
    if not items:
        raise DatasetError(f"no frame of phase(s) {','.join(phases)} at {focal} in the '{set_name}' videos; "
                           "nothing written")
    dest = check_destination(out, "--out")
    if shuffle:
        order = np.random.default_rng(np.random.SeedSequence([seed])).permutation(len(items)).tolist()
        items = [items[i] for i in order]

    params = {"set": set_name, "phases": list(phases), "focal": focal, "shuffle": shuffle, "seed": seed,
              "split_sha256": hashlib.sha256(split_path.read_bytes()).hexdigest(), "name": name or dest.name}
    config_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    record = {"kind": IMAGE_FOLDER_KIND, "config": params, "config_hash": config_hash, "seed": seed,
              "n": len(items), "options": {}, "renderer_version": IMAGE_FOLDER_VERSION,
              "microforge_version": __version__, "status": "incomplete", "source": str(root),
              "classes": list(PHASES), "prompt_template": PROMPT_TEMPLATE}

    def fill(tmp: Path) -> None:
        (tmp / "images").mkdir()
        (tmp / "descriptions").mkdir()
        rows, metadata = [], io.StringIO()
        writer = csv.writer(metadata, lineterminator="\n")
        writer.writerow(["filename", "label", "phase"])
        for index, item in enumerate(items):
            image, description = f"images/{index}.jpeg", f"descriptions/{index}.txt"
            shutil.copyfile(root / item["source"], tmp / image)
            (tmp / description).write_text(phase_prompt(item["phase"]), encoding="utf-8")
            label = image_label(focal, item["video"], item["frame"])
            writer.writerow([f"{index}.jpeg", label, item["phase"]])
            rows.append({"index": index, "image": image, "description": description, "phase": item["phase"],
                         "phase_index": PHASE_INDEX[item["phase"]], "video": item["video"], "frame": item["frame"],
                         "focal": focal, "label": label, "split": set_name, "source": item["source"]})
        (tmp / "metadata.csv").write_text(metadata.getvalue(), encoding="utf-8")
        finish_dataset(_KIND, tmp, record, rows, GenerationOptions(image_format="jpg"))

    build_then_move(dest, fill)
    per_phase = {p: sum(i["phase"] == p for i in items) for p in PHASES}
    return ImageFolderSummary(dest, len(items), per_phase, skipped)
