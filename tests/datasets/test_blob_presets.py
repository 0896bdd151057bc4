"""Blob recipes: the reference renders unchanged, the robust preset's ranges, the out-of-recipe
recipe, and the object scale recorded in artifacts."""

import hashlib
import math

import numpy as np
import pytest

from microforge.datasets.blob_presets import BLOB_PRESETS, blob_config, blob_object_scale, ood_blob_config
from microforge.datasets.blobs import BlobConfig, render_blob
from microforge.platform.errors import ConfigError

# sha256 of the renders below made before the wider randomisation existed (blobs-1).
REFERENCE_SHA256 = "e85ad72852e4a3e6936b234bbad1a93818f51137d6e698b83d08b85af17f464e"


def test_default_config_renders_are_byte_identical_to_the_reference_recipe():
    digest = hashlib.sha256()
    for config in ({"size": 64}, {"size": 96, "background": 0.1, "fill_intensity": 0.1, "outline_intensity": 0.5,
                                  "polarity": "dark"}):
        for index in range(6):
            s = render_blob(config, 7, index)
            for array in (s.image, s.clean, s.mask, s.control_points, s.dots):
                digest.update(np.ascontiguousarray(array).tobytes())
            assert "style" not in s.meta
    assert digest.hexdigest() == REFERENCE_SHA256


@pytest.fixture(scope="module")
def robust():
    config = blob_config(preset="robust", size=96)
    return config, [render_blob(config, 0, i) for i in range(40)]


def test_robust_preset_applies_its_ranges(robust):
    config, samples = robust
    spec = BLOB_PRESETS["robust"]
    styles = [s.meta["style"] for s in samples]
    for key, name in (("background", "background_range"), ("dot_contrast", "dot_contrast"), ("texture", "texture"),
                      ("jaggedness", "jaggedness"), ("blur", "blur"), ("pixel_scale", "pixel_scale")):
        values = np.array([style[key] for style in styles])
        lo, hi = spec[name]
        assert values.min() >= lo and values.max() <= hi, key
        assert np.ptp(values) > 0.5 * (hi - lo), f"{key} does not spread over its range"  # 40 uniform draws
    assert {style["bit_depth"] for style in styles} == {8, 16}
    for s, style in zip(samples, styles):
        levels = 2 ** style["bit_depth"] - 1  # percentile-normalised then quantised: on the grid, 0 and 1 hit
        assert np.allclose(s.image * levels, np.round(s.image * levels), atol=1e-3 * (levels > 255) + 1e-4)
        assert s.image.min() == 0.0 and s.image.max() == 1.0
    # dot radius relative to the silhouette's equivalent radius, and the share of it the dots cover
    relative, coverage, silhouette = [], [], []
    for s in samples:
        radius = math.sqrt(s.mask.sum() / math.pi)
        silhouette.append(radius / (config.size / 2))
        relative.extend(np.maximum(s.dots[:, 2], 0) / radius)
        coverage.append(np.sum(np.pi * s.dots[:, 2].astype(np.float64) ** 2) / s.mask.sum())
    relative = np.array(relative)
    lo, hi = spec["dot_radius_relative"]
    assert relative.max() <= hi + 1e-6 and np.quantile(relative, 0.05) < lo + 0.3 * (hi - lo)
    assert min(coverage) < 0.1 and max(coverage) > 0.3  # the preset asks for 3 % to 50 %
    assert min(silhouette) < 0.4 and max(silhouette) > 0.65  # silhouettes of a quarter to most of the image


def test_finer_pixels_average_the_noise_down_and_keep_the_scene():
    base = {"size": 64, "noise_types": ["gaussian"], "shape_radius": (0.5, 0.8)}
    for index in range(4):
        native = render_blob(base, 5, index)
        fine = render_blob({**base, "pixel_scale": (3.0, 3.0)}, 5, index)
        assert fine.image.shape == fine.mask.shape == (64, 64) and fine.mask.dtype == np.uint8
        assert fine.meta["style"]["pixel_scale"] == 3.0 and fine.meta["noise"] == native.meta["noise"]
        # the same silhouette (relative draws), edges within a pixel; dot centres inside it
        overlap = (fine.mask & native.mask).sum() / (fine.mask | native.mask).sum()
        assert overlap > 0.9
        x, y = np.round(fine.dots[:, :2]).astype(int).T
        assert fine.mask[np.clip(y, 0, 63), np.clip(x, 0, 63)].mean() > 0.9
        # 3 x 3 fine pixels per model pixel: white noise averages to a third of its std
        ratio = (fine.image - fine.clean).std() / (native.image - native.clean).std()
        assert 0.25 < ratio < 0.45, ratio
    assert render_blob({**base, "pixel_scale": (1.0, 4.0)}, 5, 1).meta == render_blob(
        {**base, "pixel_scale": (1.0, 4.0)}, 5, 1).meta
    with pytest.raises(ConfigError, match="pixel_scale"):
        BlobConfig.load({"pixel_scale": (0.5, 2.0)})


def test_robust_outlines_are_jagged_and_masks_follow(robust):
    _, samples = robust
    by_jag = sorted(samples, key=lambda s: s.meta["style"]["jaggedness"])
    import cv2

    def roughness(mask):  # perimeter over the perimeter of the convex hull: 1 for a convex outline
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = max(contours, key=cv2.contourArea)
        return cv2.arcLength(c, True) / cv2.arcLength(cv2.convexHull(c), True)

    smooth = np.mean([roughness(s.mask) for s in by_jag[:10]])
    jagged = np.mean([roughness(s.mask) for s in by_jag[-10:]])
    assert jagged > smooth


def test_out_of_recipe_ranges_lie_past_the_training_ranges():
    for train in (BlobConfig(size=64), blob_config(preset="robust", size=64)):
        ood = ood_blob_config(train)
        for name in ("shape_radius", "dot_contrast", "texture", "jaggedness", "blur"):
            a, b = getattr(train, name), getattr(ood, name)
            assert b[0] > a[1] or b[1] < a[0], name
        if train.dot_radius_relative:
            assert ood.dot_radius_relative[0] > train.dot_radius_relative[1]
            assert ood.dot_coverage[0] > train.dot_coverage[1]
        else:
            assert ood.dot_radius[0] > train.dot_radius[1] and ood.dots[0] > train.dots[1]
        background = train.background_range[1] if train.background_range else train.background
        assert ood.background_range[0] > background and ood.bit_depths == (8,)
        render_blob(ood, 0, 0)  # renders


def test_presets_and_object_scale():
    with pytest.raises(ConfigError, match="did you mean 'robust'"):
        blob_config({"preset": "robus"})
    assert blob_config({"preset": "robust", "blur": (0.0, 0.5)}, size=64).blur == (0.0, 0.5)
    with pytest.raises(ConfigError, match="bit_depths"):
        BlobConfig.load({"bit_depths": [12]})
    small, large = blob_object_scale({"size": 64}, samples=8), blob_object_scale({"size": 128}, samples=8)
    assert 2.0 <= small["dot_radius_px"] <= 6.0 and small["dot_radius_px"] == large["dot_radius_px"]
    assert large["silhouette_radius_px"] == pytest.approx(2 * small["silhouette_radius_px"], rel=0.15)


def test_shapes_that_fill_the_image_still_place():
    # out-of-recipe silhouettes fill the image; jagged outlines overshoot it and are scaled to fit
    for config in (ood_blob_config(blob_config(preset="robust", size=32)), ood_blob_config({"size": 32})):
        for index in range(150):
            assert render_blob(config, 0, index).mask.any()
