"""Oriented bounding boxes in pixel coordinates.

Convention: x to the right, y down, origin at the top-left corner of the top-left pixel.
``angle`` is in radians, the direction of the box's length axis measured from +x towards +y,
normalised to [-pi/2, pi/2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from microforge.platform.errors import ConfigError


def normalise_angle(angle: float) -> float:
    """Map any angle to the equivalent direction in [-pi/2, pi/2) (a box has no head or tail)."""
    return (angle + math.pi / 2) % math.pi - math.pi / 2


def box_corners(cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    """The 4 corners, shape (4, 2), in order: (+u,+v), (-u,+v), (-u,-v), (+u,-v) around the centre,
    where u runs along the length and v across it."""
    c, s = math.cos(angle), math.sin(angle)
    u = np.array([c, s]) * (length / 2)
    v = np.array([-s, c]) * (width / 2)
    centre = np.array([cx, cy])
    return np.stack([centre + u + v, centre - u + v, centre - u - v, centre + u - v])


@dataclass(frozen=True)
class OrientedBox:
    """A labelled object: centre, length (long side), width (short side), angle, its 4 corners,
    and whether the image border cut it."""

    cx: float
    cy: float
    length: float
    width: float
    angle: float
    corners: tuple[tuple[float, float], ...]
    truncated: bool = False
    class_name: str = "Crystal"

    @classmethod
    def from_geometry(cls, cx: float, cy: float, length: float, width: float, angle: float,
                      class_name: str = "Crystal") -> "OrientedBox":
        angle = normalise_angle(angle)
        corners = box_corners(cx, cy, length, width, angle)
        return cls(float(cx), float(cy), float(length), float(width), float(angle),
                   tuple((float(x), float(y)) for x, y in corners), False, class_name)

    def corners_array(self) -> np.ndarray:
        return np.asarray(self.corners, dtype=np.float64)


def clip_boxes(boxes: Iterable[OrientedBox], width: int, height: int,
               min_visible_fraction: float = 0.25) -> list[OrientedBox]:
    """Clip oriented boxes to an image of ``width`` x ``height`` pixels, i.e. [0, W] x [0, H].

    - A box wholly inside is returned unchanged.
    - A box cut by the border is intersected with the image rectangle; if the visible fraction
      (clipped area / full area) is below ``min_visible_fraction`` it is dropped, otherwise it is
      replaced by the tight box of the visible polygon *in the box's own orientation*: the
      polygon is projected on the box's length and width axes, giving a new centre, length and
      width with the same angle. Its corners are clamped into [0, W] x [0, H] (so they may no
      longer form an exact rectangle) and ``truncated`` is set.
    - A box wholly outside (nothing visible) is dropped, whatever ``min_visible_fraction``.

    Why the box's own orientation and not, say, ``cv2.minAreaRect`` of the visible polygon: a
    rod cut by the border is still a rod pointing the same way, and a detector should learn the
    rod's true orientation, not the orientation of the border's cut. A consequence: a stub much
    shorter than the rod is wide comes back with ``length < width`` (angle still along the rod).

    The centre of the new box lies inside the visible polygon (the centre of a convex polygon's
    bounding rectangle, in any orientation, belongs to the polygon), hence inside the image.

    Args:
        boxes: boxes in pixel coordinates.
        width, height: image size in pixels (> 0).
        min_visible_fraction: in [0, 1]; boxes with less of their area visible are dropped.

    Returns:
        The kept boxes, in input order.

    Raises:
        ConfigError: ``min_visible_fraction`` outside [0, 1], or a non-positive image size.
    """
    if not 0.0 <= min_visible_fraction <= 1.0:  # also rejects NaN
        raise ConfigError(f"min_visible_fraction must be in [0, 1], got {min_visible_fraction}")
    if not (width > 0 and height > 0):
        raise ConfigError(f"image size must be positive, got width={width}, height={height}")
    from .rotated import clip_box_array  # the geometry, on arrays (that module imports this one)

    boxes = list(boxes)
    geometry = np.array([(b.cx, b.cy, b.length, b.width, b.angle) for b in boxes], np.float64).reshape(-1, 5)
    kept: list[OrientedBox] = []
    for row, i, cut in zip(*clip_box_array(geometry, width, height, min_visible_fraction)):
        box = boxes[i]
        if not cut:
            kept.append(box)
            continue
        cx, cy, length, box_width = (float(v) for v in row[:4])
        new_corners = box_corners(cx, cy, length, box_width, box.angle)
        new_corners[:, 0] = np.clip(new_corners[:, 0], 0, width)
        new_corners[:, 1] = np.clip(new_corners[:, 1], 0, height)
        kept.append(OrientedBox(cx, cy, length, box_width, box.angle,
                                tuple((float(x), float(y)) for x, y in new_corners), True, box.class_name))
    return kept
