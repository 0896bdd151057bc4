"""Reading an extracted embryo dataset (real or rendered) and checking it.

The layout under ROOT: ``embryo_dataset[_F<z>]/<video>/..._RUN<n>.jpeg`` per focal plane,
``embryo_dataset_annotations/<video>_phases.csv`` (rows ``phase,first_frame,last_frame``, no
header, inclusive), ``embryo_dataset_time_elapsed/<video>_timeElapsed.csv`` (header
``frame,time``) and ``embryo_dataset_grades.csv``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ...platform.errors import DatasetError
from .layout import (ANNOTATIONS, DEFAULT_FOCAL, FOCAL_PLANES, GRADES_FILE, PHASE_INDEX, TIME_ELAPSED, TIME_HEADER,
                     frame_number, image_folder, phases_file, time_file)

__all__ = ["PhaseRange", "frames_of", "read_annotations", "read_phases_csv", "validate_extracted"]

PhaseRange = tuple[str, int, int]  # (phase, first_frame, last_frame), inclusive
_SUFFIX = "_phases.csv"


def read_phases_csv(path: Path) -> list[PhaseRange]:
    """The rows of one ``{video}_phases.csv``.

    Raises:
        DatasetError: an unreadable file, a malformed row, an unknown phase or first > last
            (named with the file and row).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read {path} ({exc.strerror or exc})") from None
    rows = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise DatasetError(f"{path} row {number}: expected 'phase,first_frame,last_frame', got {','.join(row)}")
        phase = row[0].strip()
        if phase not in PHASE_INDEX:
            raise DatasetError(f"{path} row {number}: unknown phase '{phase}'")
        try:
            first, last = int(row[1]), int(row[2])
        except ValueError:
            raise DatasetError(f"{path} row {number}: frame numbers must be integers, got {row[1]},{row[2]}") from None
        if first > last or first < 0:
            raise DatasetError(f"{path} row {number}: first frame {first} after last frame {last}")
        rows.append((phase, first, last))
    return rows


def _annotation_dir(root: Path) -> Path:
    folder = root / ANNOTATIONS
    if not folder.is_dir():
        raise DatasetError(f"{root} has no {ANNOTATIONS}/ folder; pass the directory that "
                           "'microforge data embryo extract' wrote")
    return folder


def read_annotations(root: str | Path) -> dict[str, list[PhaseRange]]:
    """Every video's phase ranges, by video name (sorted).

    Raises:
        DatasetError: no annotations folder, or a bad phases file (see :func:`read_phases_csv`).
    """
    folder = _annotation_dir(Path(root))
    names = sorted(n for n in os.listdir(folder) if n.endswith(_SUFFIX))
    return {n[: -len(_SUFFIX)]: read_phases_csv(folder / n) for n in names}


def frames_of(root: str | Path, video: str, focal: str = DEFAULT_FOCAL) -> dict[int, str]:
    """The frames present of ``video`` at ``focal``: frame number -> path relative to ``root``."""
    rel = f"{image_folder(focal)}/{video}"
    try:
        names = os.listdir(Path(root) / rel)
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        number = frame_number(name)
        if number is not None:
            found[number] = f"{rel}/{name}"
    return dict(sorted(found.items()))


def _videos(root: Path, focal: str) -> set[str]:
    folder = root / image_folder(focal)
    return {n for n in os.listdir(folder) if (folder / n).is_dir()} if folder.is_dir() else set()


def validate_extracted(root: str | Path, limit: int = 20) -> tuple[int, list[str]]:
    """Check an extracted dataset: every video has annotations and time-elapsed files, every
    phase is known, every frame range lies within the frames present at F0, every focal plane
    holds the same videos. Returns (videos, up to ``limit`` problems, the last saying how many
    more there were)."""
    root = Path(root)
    problems: list[str] = []
    for focal in FOCAL_PLANES:
        if not (root / image_folder(focal)).is_dir():
            problems.append(f"no {image_folder(focal)}/ folder")
    for name in (ANNOTATIONS, TIME_ELAPSED):
        if not (root / name).is_dir():
            problems.append(f"no {name}/ folder")
    if not (root / GRADES_FILE).is_file():
        problems.append(f"no {GRADES_FILE}")
    videos = _videos(root, DEFAULT_FOCAL)
    for focal in FOCAL_PLANES:
        if focal != DEFAULT_FOCAL and (root / image_folder(focal)).is_dir():
            differ = sorted(videos ^ _videos(root, focal))
            if differ:
                problems.append(f"{image_folder(focal)}/ and {image_folder(DEFAULT_FOCAL)}/ differ in "
                                f"{len(differ)} video(s), e.g. {differ[0]}")
    annotated = {n[: -len(_SUFFIX)] for n in os.listdir(root / ANNOTATIONS) if n.endswith(_SUFFIX)} \
        if (root / ANNOTATIONS).is_dir() else set()
    for video in sorted(videos | annotated):
        if video not in annotated:
            problems.append(f"video {video} has no {ANNOTATIONS}/{phases_file(video)}")
            continue
        if video not in videos:
            problems.append(f"{phases_file(video)} names video {video}, which has no frames")
            continue
        try:
            ranges = read_phases_csv(root / ANNOTATIONS / phases_file(video))
        except DatasetError as exc:
            problems.append(str(exc).replace(str(root) + os.sep, ""))
            continue
        present = frames_of(root, video)
        if not ranges:
            problems.append(f"{phases_file(video)} has no rows")
        lo, hi = (min(present), max(present)) if present else (None, None)
        for phase, first, last in ranges:
            if lo is None or first < lo or last > hi:
                problems.append(f"video {video}: {phase} frames {first}-{last} outside the frames present "
                                f"({'none' if lo is None else f'{lo}-{hi}'})")
        if (root / TIME_ELAPSED).is_dir():
            times = root / TIME_ELAPSED / time_file(video)
            if not times.is_file():
                problems.append(f"video {video} has no {TIME_ELAPSED}/{time_file(video)}")
            elif times.read_text(encoding="utf-8-sig").split("\n", 1)[0].strip().split(",") != list(TIME_HEADER):
                problems.append(f"{time_file(video)} does not start with the header {','.join(TIME_HEADER)}")
    if len(problems) > limit:
        problems = problems[: limit - 1] + [f"... and {len(problems) - limit + 1} more"]
    return len(videos), problems
