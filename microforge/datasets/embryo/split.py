"""``microforge data embryo split``: a fair train/val/test split of the videos.

Whole videos go to one split each (frames of one embryo never straddle two). Phases are taken
from the rarest (fewest videos) to the most common; the videos having a phase that are still
unassigned go, in a seeded order, each to the split furthest below its share (weights
0.6 / 0.2 / 0.2 by default) of that phase's videos, so even rare phases reach every split.
Videos without annotated phases go last, by their share of all videos.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...platform.config import suggest
from ...platform.errors import ConfigError, DatasetError
from ...platform.storage import atomic_write_text
from .extracted import read_annotations
from .layout import PHASES

__all__ = ["SPLITS", "WEIGHTS", "fair_split", "format_counts", "phase_counts", "read_split_file", "split_videos"]

SPLITS = ("train", "val", "test")
WEIGHTS = (0.6, 0.2, 0.2)


def parse_weights(text: str) -> tuple[float, float, float]:
    """``"0.6,0.2,0.2"`` -> three non-negative weights summing to 1.

    Raises:
        ConfigError: anything else.
    """
    try:
        weights = tuple(float(p) for p in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != 3 or any(not w >= 0 for w in weights) or abs(sum(weights) - 1) > 1e-6:
        raise ConfigError(f"--weights must be three non-negative numbers summing to 1 (train,val,test), got '{text}'")
    return weights  # type: ignore[return-value]


def fair_split(video_phases: Mapping[str, set[str]], weights: Sequence[float] = WEIGHTS,
               seed: int = 0) -> dict[str, list[str]]:
    """The split of every video (see the module doc): ``{"train": [...], "val": [...], "test": [...]}``,
    names sorted. Deterministic in (videos, their phases, weights, seed)."""
    names = sorted(video_phases)
    rank = {name: int(r) for r, name in
            zip(np.random.default_rng(np.random.SeedSequence([seed])).permutation(len(names)), names)}
    assigned: dict[str, int] = {}
    having = {p: [v for v in names if p in video_phases[v]] for p in PHASES}
    order = sorted((p for p in PHASES if having[p]), key=lambda p: (len(having[p]), PHASES.index(p)))

    def place(videos: list[str], pool: list[str]) -> None:
        counts = [sum(assigned.get(v) == s for v in pool) for s in range(3)]
        for video in sorted(videos, key=rank.__getitem__):
            deficit = [weights[s] * len(pool) - counts[s] if weights[s] > 0 else -np.inf for s in range(3)]
            best = int(np.argmax(deficit))  # ties: train, then val, then test
            assigned[video] = best
            counts[best] += 1

    for phase in order:
        place([v for v in having[phase] if v not in assigned], having[phase])
    place([v for v in names if v not in assigned], names)
    return {SPLITS[s]: sorted(v for v in names if assigned[v] == s) for s in range(3)}


def phase_counts(split: Mapping[str, Sequence[str]], video_phases: Mapping[str, set[str]]) -> dict[str, dict[str, int]]:
    """Videos having each phase, per split: ``{split: {phase: n}}``."""
    return {s: {p: sum(p in video_phases.get(v, ()) for v in videos) for p in PHASES} for s, videos in split.items()}


def format_counts(split: Mapping[str, Sequence[str]], counts: Mapping[str, Mapping[str, int]]) -> str:
    """A table: one row per phase, one column per split (videos having the phase)."""
    lines = [f"{'phase':<6}" + "".join(f"{s:>7}" for s in split)]
    lines += [f"{p:<6}" + "".join(f"{counts[s][p]:>7}" for s in split) for p in PHASES]
    lines.append(f"{'videos':<6}" + "".join(f"{len(v):>7}" for v in split.values()))
    return "\n".join(lines)


def split_videos(extracted: str | Path, out: str | Path, *, seed: int = 0,
                 weights: Sequence[float] = WEIGHTS) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """Write ``out`` (JSON: ``train``, ``val``, ``test`` -> video names) for the extracted
    dataset ``extracted``; the split and its phase counts.

    Raises:
        ConfigError: a negative seed. DatasetError: no annotations, a bad phases file, no video.
    """
    if seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {seed}")
    annotations = read_annotations(extracted)
    if not annotations:
        raise DatasetError(f"{extracted} has no annotated video")
    video_phases = {v: {p for p, _, _ in rows} for v, rows in annotations.items()}
    split = fair_split(video_phases, weights, seed)
    out = Path(out).expanduser().absolute()
    if out.is_dir():
        raise DatasetError(f"--out {out} is a directory; name a file such as split.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(split, indent=2) + "\n")
    return split, phase_counts(split, video_phases)


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """A split file: an object with exactly the keys ``train``, ``val``, ``test``, each a list of
    video names, no video in two splits.

    Raises:
        DatasetError: a missing or unreadable file, other keys (e.g. the original's ``eval``),
            a video in two splits.
    """
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"split file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"split file {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"split file {path} must hold an object with keys {', '.join(SPLITS)}")
    for key in data:
        if key not in SPLITS:
            raise DatasetError(f"split file {path} has an unknown key '{key}'{suggest(str(key), SPLITS)}; "
                               f"valid: {', '.join(SPLITS)}")
    for key in SPLITS:
        videos = data.get(key, [])
        if not isinstance(videos, list) or not all(isinstance(v, str) for v in videos):
            raise DatasetError(f"split file {path}: '{key}' must be a list of video names")
    seen: dict[str, str] = {}
    for key in SPLITS:
        for video in data.get(key, []):
            if video in seen:
                raise DatasetError(f"split file {path}: video {video} is in both '{seen[video]}' and '{key}'")
            seen[video] = key
    return {key: list(data.get(key, [])) for key in SPLITS}
