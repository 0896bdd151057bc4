"""Oriented boxes: corner geometry and clipping at the image border."""

import math

import cv2
import numpy as np
import pytest

from microforge.datasets.obb import OrientedBox, clip_boxes, normalise_angle
from microforge.datasets.rotated import boxes_array, intersection_areas
from microforge.platform.errors import ConfigError

W, H = 320, 240


def angle_diff(a: float, b: float) -> float:
    """Difference of two box directions modulo pi, in [0, pi/2]."""
    return abs((a - b + math.pi / 2) % math.pi - math.pi / 2)


def test_corners_agree_with_geometry_at_random_angles():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cx, cy = rng.uniform(-50, 400, size=2)
        length, width = rng.uniform(1, 200), rng.uniform(1, 50)
        box = OrientedBox.from_geometry(cx, cy, length, width, rng.uniform(-10, 10))
        c = box.corners_array()
        assert c.shape == (4, 2)
        assert -math.pi / 2 <= box.angle < math.pi / 2
        np.testing.assert_allclose(c.mean(axis=0), [cx, cy], atol=1e-9)
        assert np.linalg.norm(c[0] - c[1]) == pytest.approx(length)
        assert np.linalg.norm(c[1] - c[2]) == pytest.approx(width)
        along = c[0] - c[1]
        assert angle_diff(math.atan2(along[1], along[0]), box.angle) < 1e-9


def test_normalise_angle_range():
    for a in np.linspace(-20, 20, 401):
        n = normalise_angle(a)
        assert -math.pi / 2 <= n < math.pi / 2
        assert angle_diff(n, a) < 1e-9


def test_visible_area_matches_opencv():
    rng = np.random.default_rng(1)
    boxes = [OrientedBox.from_geometry(*rng.uniform(-40, 360, size=2), rng.uniform(5, 300), rng.uniform(2, 40),
                                       rng.uniform(-2, 2)) for _ in range(100)]
    boxes += [OrientedBox.from_geometry(W / 2, H / 2, 10, 4, a) for a in (0.0, math.pi / 2)]  # wholly inside
    boxes += [OrientedBox.from_geometry(0, 50, 40, 10, 0.0), OrientedBox.from_geometry(-30, -30, 20, 4, 0.5)]
    frame = np.tile([W / 2, H / 2, W, H, 0.0], (len(boxes), 1))  # the image as a box
    ours = intersection_areas(boxes_array(boxes), frame)
    image = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float32)
    for box, area in zip(boxes, ours):
        cv_area, _ = cv2.intersectConvexConvex(box.corners_array().astype(np.float32), image)
        assert area == pytest.approx(max(cv_area, 0.0), abs=1e-2)
    assert ours[-2] == pytest.approx(200) and ours[-1] == 0.0


def test_box_inside_is_unchanged():
    box = OrientedBox.from_geometry(100, 80, 60, 12, 0.7)
    assert clip_boxes([box], W, H) == [box]


def test_box_half_outside_is_truncated_tight_box():
    box = OrientedBox.from_geometry(0, 120, 40, 10, 0.0)
    (clipped,) = clip_boxes([box], W, H)
    assert clipped.truncated
    assert (clipped.cx, clipped.cy, clipped.length, clipped.width) == pytest.approx((10, 120, 20, 10))
    assert clipped.angle == box.angle


def test_rotated_box_half_outside_keeps_orientation():
    # A box centred on the left border has exactly half its area inside (point symmetry).
    box = OrientedBox.from_geometry(0, 120, 40, 10, 0.3)
    (clipped,) = clip_boxes([box], W, H)
    assert clipped.truncated and clipped.angle == box.angle
    assert 0.5 <= clipped.length * clipped.width / (box.length * box.width) <= 0.6
    c = clipped.corners_array()
    assert (c[:, 0] >= 0).all() and (c[:, 0] <= W).all()
    assert (c[:, 1] >= 0).all() and (c[:, 1] <= H).all()
    assert 0 <= clipped.cx <= W and 0 <= clipped.cy <= H


def test_sliver_is_dropped_and_kept_with_low_threshold():
    box = OrientedBox.from_geometry(-18, 120, 40, 10, 0.0)  # 2 of 40 px visible: 5 %
    assert clip_boxes([box], W, H) == []
    (kept,) = clip_boxes([box], W, H, min_visible_fraction=0.04)
    assert kept.length == pytest.approx(2)


def test_box_fully_outside_is_dropped_even_at_zero_threshold():
    outside = OrientedBox.from_geometry(-30, -30, 20, 5, 0.4)
    touching = OrientedBox.from_geometry(W + 5, 100, 10, 4, 0.0)  # one edge on the border
    assert clip_boxes([outside, touching], W, H, min_visible_fraction=0.0) == []


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_min_visible_fraction_is_validated(fraction):
    with pytest.raises(ConfigError, match="min_visible_fraction"):
        clip_boxes([], W, H, min_visible_fraction=fraction)


def test_random_rods_cut_at_every_border_and_corner():
    rng = np.random.default_rng(2)
    anchors = [(x, y) for x in (0, W / 2, W) for y in (0, H / 2, H) if (x, y) != (W / 2, H / 2)]
    n_truncated = 0
    for _ in range(50):
        for ax, ay in anchors:
            box = OrientedBox.from_geometry(ax + rng.normal(0, 15), ay + rng.normal(0, 15),
                                            rng.uniform(10, 1.5 * W), rng.uniform(2, 30),
                                            rng.uniform(-math.pi, math.pi))
            for clipped in clip_boxes([box], W, H):
                c = clipped.corners_array()
                assert (c >= 0).all() and (c[:, 0] <= W).all() and (c[:, 1] <= H).all()
                assert -1e-9 <= clipped.cx <= W + 1e-9 and -1e-9 <= clipped.cy <= H + 1e-9
                if clipped.truncated:
                    n_truncated += 1
                    assert clipped.angle == box.angle
                    assert clipped.length <= box.length + 1e-9
                    assert clipped.width <= box.width + 1e-9
                else:
                    assert clipped == box
    assert n_truncated > 100
