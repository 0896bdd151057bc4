"""``split``: a deterministic, grouped train/val/test split written into a dataset's manifest.

Rows are grouped (by the source file's parent folder, or by the first capture group of a regular
expression applied to the source path) and whole groups are assigned to splits, so the images of
one slide or patient never straddle two splits. Groups are shuffled by ``seed`` and each goes to
the split furthest below its share of the images. Rows whose input was unreadable keep their
``error`` split. The manifest, the split lists and ``dataset.json`` are rewritten atomically.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...platform.errors import ConfigError, DatasetError
from ..manifest import INFO_FILE, read_manifest
from ..writer import SPLIT_NAMES, DatasetKind, finish_dataset
from .jobs import ERROR_SPLIT, PIPELINE_VERSION, _NO_OPTIONS, _uniform


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> three non-negative fractions summing to 1 (within 1e-6).

    Raises:
        ConfigError: not three numbers, a negative one, or a sum other than 1.
    """
    try:
        ratios = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"--ratios must be three numbers like 0.8,0.1,0.1 (train,val,test), got '{text}'") from None
    if len(ratios) != 3 or any(not r >= 0 for r in ratios):
        raise ConfigError(f"--ratios must be three non-negative numbers (train,val,test), got '{text}'")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(f"--ratios must sum to 1, got {text} (sum {sum(ratios):g})")
    return ratios  # type: ignore[return-value]


def group_key_function(group_by: str):
    """``parent`` -> the source's parent folder; anything else is a regex whose first capture
    group (applied with ``re.search`` to the source path) names the group.

    Raises:
        ConfigError: an invalid regex, or one without a capture group.
    """
    if group_by == "parent":
        return lambda source: posixpath.dirname(source)
    try:
        pattern = re.compile(group_by)
    except re.error as exc:
        raise ConfigError(f"--group-by '{group_by}' is not a valid regular expression ({exc})") from None
    if pattern.groups < 1:
        raise ConfigError(f"--group-by '{group_by}' has no capture group; put the part that names the group "
                          "in parentheses, e.g. 'patient_(\\d+)'")

    def key(source: str) -> str:
        match = pattern.search(source)
        if match is None or match.group(1) is None:
            raise ConfigError(f"--group-by '{group_by}' does not match the source path '{source}'")
        return match.group(1)

    return key


def assign_groups(sizes: dict[str, int], ratios: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Each group's split: groups in a seeded shuffle of their sorted names, each to the split
    with the largest shortfall against ``ratio x total`` (ties: train, val, test)."""
    names = sorted(sizes)
    order = np.random.default_rng(np.random.SeedSequence([seed, len(names)])).permutation(len(names))
    total = sum(sizes.values())
    counts = [0, 0, 0]
    assigned = {}
    for i in order.tolist():
        shortfall = [ratios[s] * total - counts[s] if ratios[s] > 0 else -np.inf for s in range(3)]
        best = int(np.argmax(shortfall))
        counts[best] += sizes[names[i]]
        assigned[names[i]] = SPLIT_NAMES[best]
    return assigned


def split_dataset(path: str | Path, ratios: tuple[float, float, float], seed: int = 0,
                  group_by: str = "parent") -> dict[str, Any]:
    """Write the split of every row of the dataset ``path`` (see the module doc); the counts.

    Raises:
        ConfigError: bad ratios or ``group_by``, a negative seed. DatasetError: no dataset at
            ``path``, or no readable image in it. Nothing is written in those cases.
    """
    if seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {seed}")
    key = group_key_function(group_by)
    root = Path(path).expanduser().absolute()
    table = read_manifest(root)
    info = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
    rows = table.to_pylist()
    column = "source" if "source" in table.column_names else "image"
    if column not in table.column_names:
        raise DatasetError(f"the manifest of {root} has neither a 'source' nor an 'image' column")
    usable = [r for r in rows if r.get("image") and not r.get("error")]
    if not usable:
        raise DatasetError(f"{root} has no readable images to split")
    groups = [key(str(r[column])) for r in usable]
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    assigned = assign_groups(sizes, ratios, seed)
    for row in rows:
        row["split"], row["group"] = ERROR_SPLIT, None
    for row, g in zip(usable, groups):
        row["split"], row["group"] = assigned[g], g
    for position, row in enumerate(rows):
        row.setdefault("index", position)
    record = {**info, "split": {"ratios": list(ratios), "seed": seed, "group_by": group_by, "groups": len(sizes)}}
    kind = DatasetKind(name=str(info.get("kind")), config_cls=None, renderer_version=PIPELINE_VERSION,  # type: ignore[arg-type]
                       encode=None, owned_dirs=())  # type: ignore[arg-type]
    return finish_dataset(kind, root, record, _uniform(rows), _NO_OPTIONS)
