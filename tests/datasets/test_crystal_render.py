import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from microforge.datasets.crystals import RENDERER_VERSION, CrystalConfig, load_preset, render_crystal
from microforge.datasets.obb import box_corners

# A small canvas with every feature on: ghosts, debris, fused arms, a legend, noise terms.
TINY = dict(
    width=96, height=64, n_rods_rng_lo_hi=(6, 12), rod_len_px_lo_hi=(10, 50), fused_p0=0.3, fused_p1=0.3,
    ghost_enable=True, ghost_fraction=1.5, ghost_blur_sigma=0.8, ghost_noise_std=0.5, ghost_curvature=1.0,
    debris_rate=0.004, debris_size_px=(1, 3), debris_dash_prob=0.5, scalebar_prob=1.0,
    scalebar_len_px=(10, 20), scalebar_thick_px=(1, 3), scalebar_margin_px=4, scalebar_font_px=(8, 10),
    bg_noise_std=1.0, rod_noise_std=2.0, illum_ampl=5.0, illum_sigma=10.0, vignette_strength=0.2, blur_sigma=0.7,
)


def tiny(**changes) -> CrystalConfig:
    return CrystalConfig.load({**TINY, **changes})


def digest(sample) -> str:
    return hashlib.sha256(sample.image.tobytes()).hexdigest()


def test_same_seed_and_index_give_identical_output():
    a, b = render_crystal(tiny(), 7, 3), render_crystal(tiny(), 7, 3)
    assert digest(a) == digest(b)
    assert a.boxes == b.boxes and a.meta == b.meta


def test_other_index_or_seed_gives_other_image():
    base = digest(render_crystal(tiny(), 7, 3))
    assert digest(render_crystal(tiny(), 7, 4)) != base
    assert digest(render_crystal(tiny(), 8, 3)) != base


def test_render_does_not_depend_on_what_was_rendered_before():
    alone = render_crystal(tiny(), 1, 5)
    for index in range(5):
        render_crystal(tiny(), 1, index)
    assert digest(render_crystal(tiny(), 1, 5)) == digest(alone)


def test_render_is_identical_in_another_process():
    code = ("import hashlib; from microforge.datasets.crystals import CrystalConfig, render_crystal; "
            f"s = render_crystal(CrystalConfig.load({TINY!r}), 2, 9); "
            "print(hashlib.sha256(s.image.tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == digest(render_crystal(tiny(), 2, 9))


def test_output_dtype_shape_and_channels():
    gray = render_crystal(tiny(), 0, 0)
    assert gray.image.dtype == np.uint8 and gray.image.shape == (64, 96)
    color = render_crystal(tiny(channels=3), 0, 0)
    assert color.image.dtype == np.uint8 and color.image.shape == (64, 96, 3)
    for c in range(3):
        np.testing.assert_array_equal(color.image[..., c], gray.image)


def test_boxes_match_their_geometry_and_are_unclipped():
    sample = render_crystal(tiny(), 4, 2)
    assert sample.boxes
    for box in sample.boxes:
        np.testing.assert_allclose(box.corners_array(), box_corners(box.cx, box.cy, box.length, box.width, box.angle),
                                   atol=1e-9)
        assert -math.pi / 2 <= box.angle < math.pi / 2
        assert box.length > 0 and box.width >= 2 and not box.truncated and box.class_name == "Crystal"


def test_box_count_matches_meta_including_fused_arms():
    sample = render_crystal(tiny(fused_p0=1.0, fused_p1=1.0), 3, 1)
    meta = sample.meta
    assert meta["n_fused"] == meta["n_rods"] > 0
    assert 2 * meta["n_rods"] <= meta["n_arms"] <= 5 * meta["n_rods"]
    for seed in range(4):
        meta = (sample := render_crystal(tiny(), seed, 0)).meta
        assert len(sample.boxes) == meta["n_boxes"] == meta["n_rods"] - meta["n_fused"] + meta["n_arms"]
        assert len(meta["polarity"]) == len(sample.boxes)
        assert meta["n_ghosts"] == round(meta["n_rods"] * TINY["ghost_fraction"])


def test_meta_is_json_serialisable_and_complete():
    meta = render_crystal(tiny(), 0, 1).meta
    assert json.loads(json.dumps(meta)) == meta
    assert 0.0 <= meta["t"] <= 1.0 and 0.1 <= meta["lambda"] <= 10.0
    assert meta["scalebar"]["text"].split()[1] in ("um", "nm", "mm")  # Pillow's font has no µ
    assert meta["n_debris"] > 0 and meta["n_ghosts"] > 0
    assert RENDERER_VERSION == "1"


@pytest.mark.parametrize("change", [
    {"ghost_enable": False}, {"debris_rate": 0.0}, {"scalebar_enable": False}, {"bg_noise_std": 0.0},
])
def test_unlabelled_clutter_does_not_change_the_labels(change):
    """Ghosts, debris, legend and noise draw from their own random streams."""
    with_all, without = render_crystal(tiny(), 5, 0), render_crystal(tiny(**change), 5, 0)
    assert without.boxes == with_all.boxes
    assert digest(without) != digest(with_all)


def test_scalebar_is_drawn_in_its_bbox():
    sample = render_crystal(tiny(scalebar_white_jit=(255, 255), scalebar_outline=False, blur_sigma=0), 0, 0)
    x0, y0, x1, y1 = sample.meta["scalebar"]["bbox"]
    assert (sample.image[y0:y1, x0:x1] == 255).sum() > 10
    assert render_crystal(tiny(scalebar_prob=0.0), 0, 0).meta["scalebar"] is None


def test_parallel_workers_is_ignored():
    assert digest(render_crystal(tiny(parallel_workers=8), 0, 0)) == digest(render_crystal(tiny(), 0, 0))


def test_rods_can_be_switched_off():
    sample = render_crystal(tiny(rods_enable=False), 0, 0)
    assert sample.boxes == [] and sample.meta["n_rods"] == 0 and sample.meta["n_ghosts"] > 0


def test_rods_darken_the_image_where_they_lie():
    config = tiny(n_rods_rng_lo_hi=(1, 1), rod_len_px_lo_hi=(40, 40), rod_aspect_lo_hi=(0.3, 0.3),
                  rod_delta_rng=(-60, -60), fused_enable=False, ghost_enable=False, debris_rate=0.0,
                  scalebar_enable=False, bg_noise_std=0.0, rod_noise_std=0.0, shadow_gain=(0, 0))
    sample = render_crystal(config, 0, 0)
    box = sample.boxes[0]
    inside = sample.image[int(box.cy), int(box.cx)]
    assert inside < np.median(sample.image) - 30


def test_dict_config_is_validated():
    assert render_crystal({**TINY}, 0, 0).image.shape == (64, 96)
    with pytest.raises(Exception, match="widht"):
        render_crystal({"widht": 5}, 0, 0)


@pytest.mark.parametrize("name", ["default", "standard"])
def test_presets_render_at_full_size(name):
    config = load_preset(name)
    sample = render_crystal(config, 0, 0)
    assert sample.image.shape == (config.height, config.width)
    assert len(sample.boxes) == sample.meta["n_boxes"] >= config.n_rods_rng_lo_hi[0]
    assert 20 < sample.image.mean() < 235
