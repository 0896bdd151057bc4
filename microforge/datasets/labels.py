"""Oriented-box label formats, one image at a time: DOTA v1, YOLO-OBB and Ultralytics OBB.

Writers return text (the caller writes it with ``atomic_write_text``); readers parse text back
into :class:`~microforge.datasets.obb.OrientedBox` lists. Boxes are expected to have gone through
:func:`~microforge.datasets.obb.clip_boxes` first, so their corners and centres lie inside the
image.

================  ===================  ==========================================  ==========
format            directory            one line per box                            units
================  ===================  ==========================================  ==========
``dota``          ``labels_dota``      ``x1 y1 x2 y2 x3 y3 x4 y4 class difficulty``  pixels
``yolo_obb``      ``labels_yolo_obb``  ``class_id cx cy w h angle_rad``              normalised
``ultralytics``   ``labels``           ``class_id x1 y1 x2 y2 x3 y3 x4 y4``          normalised
================  ===================  ==========================================  ==========

The dataset writer loops over :data:`LABEL_FORMATS`, whose entries share one ``format`` /
``parse`` signature.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import yaml

from microforge.platform.errors import ConfigError, DatasetError

from .obb import OrientedBox, normalise_angle

# Pixels with 4 decimals and normalised values with 6 keep a round trip within 1e-3 px for
# images up to ~1000 px, far below what a detector resolves.
_PIXEL = "{:.4f}"
_NORM = "{:.6f}"


# --------------------------------------------------------------------------------------------
# shared helpers


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    """Class names must be non-empty, whitespace-free (label lines split on whitespace), unique."""
    names = list(class_names)
    if not names:
        raise DatasetError("class_names is empty; give at least one class, e.g. ['Crystal']")
    for name in names:
        if not isinstance(name, str) or not name or any(ch.isspace() for ch in name):
            raise DatasetError(f"class name {name!r} must be a non-empty string without whitespace")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"class names must be unique; repeated: {duplicates}")
    return names


def _class_id(box: OrientedBox, class_ids: Mapping[str, int]) -> int:
    try:
        return class_ids[box.class_name]
    except KeyError:
        raise DatasetError(f"box class {box.class_name!r} has no class id; known classes: "
                           f"{sorted(class_ids)}") from None


def _unit(value: float) -> float:
    # Clamping normalised values is safe: after clip_boxes every corner and centre is inside
    # [0, size], so only rounding noise is removed. Sizes are the exception (see format_yolo_obb).
    return min(max(value, 0.0), 1.0)


def _check_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0):
        raise DatasetError(f"image size must be positive, got width={width}, height={height}")


def _numbers(tokens: Sequence[str], line_no: int) -> list[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise DatasetError(f"line {line_no}: expected numbers, got {' '.join(tokens)!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise DatasetError(f"line {line_no}: non-finite number in {' '.join(tokens)!r}")
    return values


def _class_name(token: str, class_names: Sequence[str], line_no: int) -> str:
    try:
        class_id = int(token)
    except ValueError:
        raise DatasetError(f"line {line_no}: class id {token!r} is not an integer") from None
    if not 0 <= class_id < len(class_names):
        raise DatasetError(f"line {line_no}: unknown class id {class_id}; "
                           f"known ids 0..{len(class_names) - 1} ({list(class_names)})")
    return class_names[class_id]


def _lines(text: str):
    """(line number, fields) of each non-blank line, numbered from 1."""
    for line_no, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if tokens:
            yield line_no, tokens


def _box_from_corners(corners: np.ndarray, truncated: bool, class_name: str) -> OrientedBox:
    """Rebuild (cx, cy, length, width, angle) from 4 corners, shape (4, 2), in cyclic order.

    Opposite edges are averaged, so a clamped (not quite rectangular) quadrilateral gives a
    sensible box; an exact rectangle is reproduced exactly. The longer pair of edges is the
    length axis (the formats carry no other notion of "along the rod"). The corners are kept as
    given.
    """
    p0, p1, p2, p3 = corners
    # p0-p1 and p3-p2 point the same way for any cyclic order, as do p0-p3 and p1-p2.
    side_a = (np.linalg.norm(p0 - p1) + np.linalg.norm(p3 - p2)) / 2
    side_b = (np.linalg.norm(p0 - p3) + np.linalg.norm(p1 - p2)) / 2
    if side_a >= side_b:
        axis, length, width = (p0 - p1) + (p3 - p2), side_a, side_b
    else:
        axis, length, width = (p0 - p3) + (p1 - p2), side_b, side_a
    cx, cy = corners.mean(axis=0)
    angle = normalise_angle(math.atan2(axis[1], axis[0]))
    return OrientedBox(float(cx), float(cy), float(length), float(width), float(angle),
                       tuple((float(x), float(y)) for x, y in corners), truncated, class_name)


# --------------------------------------------------------------------------------------------
# DOTA v1


def format_dota(boxes: Sequence[OrientedBox], image_source: str, gsd: float | None = None) -> str:
    """DOTA v1 label text for one image.

    Two header lines, ``imagesource:<image_source>`` and ``gsd:<gsd or null>``, then one line
    per box: ``x1 y1 x2 y2 x3 y3 x4 y4 <class_name> <difficulty>`` with the 4 corners in pixels
    and difficulty 1 for truncated boxes (cut by the border), 0 otherwise.

    Args:
        boxes: N boxes (corners in pixels).
        image_source: where the image comes from, e.g. ``"microforge-crystals"``; one line.
        gsd: ground sample distance (e.g. micrometres per pixel), or None for ``null``.

    Raises:
        DatasetError: a multi-line ``image_source`` or a class name with whitespace.
    """
    if "\n" in image_source or "\r" in image_source:
        raise DatasetError(f"image_source must be one line, got {image_source!r}")
    lines = [f"imagesource:{image_source}", f"gsd:{'null' if gsd is None else repr(float(gsd))}"]
    for name in {box.class_name for box in boxes}:
        _check_class_names([name])
    # One format call per line: per-value calls made the label text a tenth of an image's cost.
    line = " ".join([_PIXEL] * 8) + " {} {:d}"
    for box in boxes:
        (x1, y1), (x2, y2), (x3, y3), (x4, y4) = box.corners
        lines.append(line.format(x1, y1, x2, y2, x3, y3, x4, y4, box.class_name, int(box.truncated)))
    return "\n".join(lines) + "\n"


def parse_dota(text: str) -> list[OrientedBox]:
    """Boxes from DOTA v1 label text (header lines ``imagesource:`` / ``gsd:`` are skipped).

    cx, cy, length, width and angle are rebuilt from the corners (see ``_box_from_corners``:
    the longer side is the length); ``truncated`` is ``difficulty == 1``.

    Raises:
        DatasetError: naming the line, for a wrong field count, a non-number coordinate or a
            difficulty other than 0 or 1.
    """
    boxes = []
    for line_no, tokens in _lines(text):
        if tokens[0].startswith(("imagesource:", "gsd:")):  # a box line starts with a number
            continue
        if len(tokens) != 10:
            raise DatasetError(f"line {line_no}: DOTA expects 10 fields "
                               f"(x1 y1 x2 y2 x3 y3 x4 y4 class difficulty), got {len(tokens)}")
        corners = np.array(_numbers(tokens[:8], line_no)).reshape(4, 2)
        if tokens[9] not in ("0", "1"):
            raise DatasetError(f"line {line_no}: DOTA difficulty must be 0 or 1, got {tokens[9]!r}")
        boxes.append(_box_from_corners(corners, tokens[9] == "1", tokens[8]))
    return boxes


# --------------------------------------------------------------------------------------------
# YOLO-OBB (as the original crystal tool wrote it)


def format_yolo_obb(boxes: Sequence[OrientedBox], width: int, height: int,
                    class_ids: Mapping[str, int]) -> str:
    """YOLO-OBB label text for one image: ``class_id cx cy w h angle_rad`` per box.

    cx and w are divided by the image width, cy and h by the image height, where w is the box's
    length and h its width (the original tool's convention, kept so old models read these
    labels). The angle is in radians in [-pi/2, pi/2), not normalised.

    Every normalised value is clamped to [0, 1]. For cx, cy this only removes rounding noise
    (clip_boxes puts centres inside the image). A long diagonal rod can have a length greater
    than the image width (or a width greater than the height) and its size clamps to 1: that
    entry is then not exact, but it exists only for rods longer than the image itself.

    Args:
        boxes: N boxes in pixels.
        width, height: image size in pixels.
        class_ids: class name -> integer id, e.g. ``{"Crystal": 0}``.

    Raises:
        DatasetError: a box whose class has no id, or a non-positive image size.
    """
    _check_size(width, height)
    line = "{:d} " + " ".join([_NORM] * 5) + "\n"
    return "".join(line.format(_class_id(box, class_ids), _unit(box.cx / width), _unit(box.cy / height),
                               _unit(box.length / width), _unit(box.width / height), normalise_angle(box.angle))
                   for box in boxes)


def parse_yolo_obb(text: str, width: int, height: int,
                   class_names: Sequence[str]) -> list[OrientedBox]:
    """Boxes from YOLO-OBB label text (see :func:`format_yolo_obb`), in pixels.

    Corners are recomputed from the geometry; the format has no truncation flag, so
    ``truncated`` is False.

    Args:
        class_names: names indexed by class id.

    Raises:
        DatasetError: naming the line, for a wrong field count, a non-number or an unknown
            class id.
    """
    _check_size(width, height)
    boxes = []
    for line_no, tokens in _lines(text):
        if len(tokens) != 6:
            raise DatasetError(f"line {line_no}: YOLO-OBB expects 6 fields "
                               f"(class cx cy w h angle), got {len(tokens)}")
        name = _class_name(tokens[0], class_names, line_no)
        cx, cy, w, h, angle = _numbers(tokens[1:], line_no)
        boxes.append(OrientedBox.from_geometry(cx * width, cy * height, w * width, h * height,
                                               angle, class_name=name))
    return boxes


# --------------------------------------------------------------------------------------------
# Ultralytics OBB


def format_ultralytics_obb(boxes: Sequence[OrientedBox], width: int, height: int,
                           class_ids: Mapping[str, int]) -> str:
    """Ultralytics OBB label text for one image: ``class_id x1 y1 x2 y2 x3 y3 x4 y4`` per box,
    x divided by the image width and y by the height.

    Clamping to [0, 1] only removes rounding noise: clip_boxes clamps corners into the image.

    Raises:
        DatasetError: a box whose class has no id, or a non-positive image size.
    """
    _check_size(width, height)
    line = "{:d} " + " ".join([_NORM] * 8) + "\n"
    return "".join(line.format(_class_id(box, class_ids), *(_unit(v / size) for x, y in box.corners
                                                            for v, size in ((x, width), (y, height))))
                   for box in boxes)


def parse_ultralytics_obb(text: str, width: int, height: int,
                          class_names: Sequence[str]) -> list[OrientedBox]:
    """Boxes from Ultralytics OBB label text (see :func:`format_ultralytics_obb`), in pixels.

    cx, cy, length, width and angle are rebuilt from the corners as in :func:`parse_dota`; the
    format has no truncation flag, so ``truncated`` is False.

    Raises:
        DatasetError: naming the line, for a wrong field count, a non-number or an unknown
            class id.
    """
    _check_size(width, height)
    boxes = []
    for line_no, tokens in _lines(text):
        if len(tokens) != 9:
            raise DatasetError(f"line {line_no}: Ultralytics OBB expects 9 fields "
                               f"(class x1 y1 x2 y2 x3 y3 x4 y4), got {len(tokens)}")
        name = _class_name(tokens[0], class_names, line_no)
        corners = np.array(_numbers(tokens[1:], line_no)).reshape(4, 2) * [width, height]
        boxes.append(_box_from_corners(corners, False, name))
    return boxes


# --------------------------------------------------------------------------------------------
# dataset-level files


def format_classes(class_names: Sequence[str]) -> str:
    """``classes.txt`` content: one class name per line, line i naming class id i.

    Raises:
        DatasetError: empty list, duplicate names, or names with whitespace.
    """
    return "".join(name + "\n" for name in _check_class_names(class_names))


def format_ultralytics_yaml(dataset_root: str | os.PathLike | None, splits: Mapping[str, str],
                            class_names: Sequence[str]) -> str:
    """Ultralytics dataset YAML: ``path``, ``train`` / ``val`` / ``test`` and ``names``.

    Ultralytics finds an image's label file by replacing ``/images/`` with ``/labels/`` in the
    image path (and the suffix with ``.txt``), so a dataset stores its images under ``images/``
    and its Ultralytics labels under ``labels/`` with the same relative paths (see
    :meth:`LabelFormat.label_path`).

    Args:
        dataset_root: the dataset directory, written as ``path``; ``None`` leaves ``path`` out,
            so Ultralytics uses the YAML file's own folder and the dataset stays relocatable.
            A relative path would be resolved against Ultralytics' ``datasets_dir`` setting.
        splits: split -> name of its list file relative to ``dataset_root``, e.g.
            ``{"train": "train.txt", "val": "val.txt"}``. Each list file holds one image path a
            line, absolute or starting with ``./`` (Ultralytics resolves only those against the
            list file's folder). Splits with an empty value are omitted; Ultralytics needs
            ``train`` and ``val`` to train.
        class_names: names indexed by class id, written as ``names: {0: Crystal, ...}``.

    Raises:
        DatasetError: a split other than train/val/test, or invalid class names.
    """
    unknown = sorted(set(splits) - {"train", "val", "test"})
    if unknown:
        raise DatasetError(f"unknown split(s) {unknown}; Ultralytics splits are train, val, test")
    data: dict[str, object] = {} if dataset_root is None else {"path": os.fspath(dataset_root)}
    for split in ("train", "val", "test"):
        if splits.get(split):
            data[split] = splits[split]
    data["names"] = dict(enumerate(_check_class_names(class_names)))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class LabelFormat:
    """A label format, its directory inside a dataset and its file suffix, with ``format`` and
    ``parse`` sharing one signature across formats so a dataset writer can loop over them."""

    name: str
    directory: str
    suffix: str
    description: str
    _format: Callable[..., str] = field(repr=False, compare=False)
    _parse: Callable[..., list[OrientedBox]] = field(repr=False, compare=False)

    def format(self, boxes: Sequence[OrientedBox], *, width: int, height: int,
               class_names: Sequence[str], image_source: str, gsd: float | None = None) -> str:
        """Label text for one image of ``width`` x ``height`` pixels; each format uses the
        arguments it needs (DOTA: image_source, gsd; the others: size and class ids)."""
        return self._format(boxes, width=width, height=height,
                            class_ids={n: i for i, n in enumerate(_check_class_names(class_names))},
                            image_source=image_source, gsd=gsd)

    def parse(self, text: str, *, width: int, height: int,
              class_names: Sequence[str]) -> list[OrientedBox]:
        """Boxes in pixels from the label text of one image."""
        return self._parse(text, width=width, height=height, class_names=class_names)

    def label_path(self, image_path: str) -> str:
        """The label file for an image, both relative to the dataset root:
        ``images/a/0001.png`` -> ``<directory>/a/0001<suffix>``.

        Raises:
            DatasetError: the image path does not start with ``images/``.
        """
        path = PurePosixPath(image_path)
        if not path.parts or path.parts[0] != "images":
            raise DatasetError(f"image path {image_path!r} must lie under images/ "
                               "(Ultralytics maps /images/ to /labels/)")
        return str(PurePosixPath(self.directory, *path.parts[1:]).with_suffix(self.suffix))


LABEL_FORMATS: dict[str, LabelFormat] = {
    fmt.name: fmt for fmt in (
        LabelFormat(
            "dota", "labels_dota", ".txt", "DOTA v1: pixel corners, class name, difficulty",
            lambda boxes, image_source, gsd, **_: format_dota(boxes, image_source, gsd),
            lambda text, **_: parse_dota(text)),
        LabelFormat(
            "yolo_obb", "labels_yolo_obb", ".txt", "YOLO-OBB: class cx cy w h angle_rad",
            lambda boxes, width, height, class_ids, **_: format_yolo_obb(
                boxes, width, height, class_ids),
            parse_yolo_obb),
        LabelFormat(
            "ultralytics", "labels", ".txt", "Ultralytics OBB: class and 4 normalised corners",
            lambda boxes, width, height, class_ids, **_: format_ultralytics_obb(
                boxes, width, height, class_ids),
            parse_ultralytics_obb),
    )
}


def get_label_format(name: str) -> LabelFormat:
    """The :data:`LABEL_FORMATS` entry called ``name``.

    Raises:
        ConfigError: unknown name, listing the valid ones and the closest match.
    """
    try:
        return LABEL_FORMATS[name]
    except KeyError:
        close = difflib.get_close_matches(name, LABEL_FORMATS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown label format {name!r}; valid: {sorted(LABEL_FORMATS)}{hint}") from None
