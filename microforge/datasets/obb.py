"""Oriented bounding boxes in pixel coordinates.

Convention: x to the right, y down, origin at the top-left corner of the top-left pixel.
``angle`` is in radians, the direction of the box's length axis measured from +x towards +y,
normalised to [-pi/2, pi/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
