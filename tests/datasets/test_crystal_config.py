import json
import logging

import pytest

from microforge.datasets.crystals import (
    CrystalConfig,
    lambda_to_t,
    load_preset,
    params_for_t,
    preset_names,
    sample_lambda,
)
from microforge.platform.errors import ConfigError


def test_presets_are_shipped_and_load():
    assert preset_names() == ["default", "standard"]
    default = load_preset("default")
    assert (default.width, default.height) == (1024, 768)
    assert default.n_rods_rng_lo_hi == (150, 600) and not default.ghost_enable
    assert default == CrystalConfig()
    standard = load_preset("standard")
    assert (standard.width, standard.height) == (2878, 2048)
    assert standard.n_rods_rng_lo_hi == (250, 400, 250)
    assert standard.rod_delta_rng == (-6, 2, -1)
    assert standard.shadow_bias == (2, 3)
    assert standard.ghost_enable and standard.ghost_fraction == 1.55
    assert standard.debris_rate == 0.001 and standard.scalebar_prob == 0.75


@pytest.mark.parametrize("name", ["default", "standard"])
def test_preset_round_trips_through_json(name, tmp_path):
    config = load_preset(name)
    path = tmp_path / "preset.json"
    path.write_text(json.dumps(config.to_json_dict()))
    again = load_preset(path)
    assert again == config and again.config_hash() == config.config_hash()


def test_preset_path_may_be_yaml(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("width: 64\nheight: 48\nn_rods_rng_lo_hi: [1, 3, 2]\n")
    config = load_preset(str(path))
    assert (config.width, config.n_rods_rng_lo_hi) == (64, (1, 3, 2))


def test_unknown_preset_name_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"'standart'.*did you mean 'standard'.*default, standard"):
        load_preset("standart")


def test_unknown_key_in_preset_file_is_named(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"width": 64, "ghost_fractoin": 0.5}))
    with pytest.raises(ConfigError, match=r"unknown key 'ghost_fractoin' \(did you mean 'ghost_fraction'\?\)"):
        load_preset(path)


@pytest.mark.parametrize("key,value", [
    ("bg_gray_range", [120, 90]),
    ("shadow_gain", [12, 6]),
    ("n_rods_rng_lo_hi", [300, 200]),
    ("n_rods_rng_lo_hi", [300, 400, 200]),  # lo above hi@t1
    ("rod_len_px_lo_hi", [60, 50, 350]),  # lo above hi@t0
])
def test_range_lo_above_hi_fails(key, value):
    with pytest.raises(ConfigError, match=key):
        CrystalConfig.load({key: value})


@pytest.mark.parametrize("key,value", [
    ("width", 0), ("height", -5), ("width", 20000),
    ("rod_len_px_lo_hi", [0, 10]), ("rod_aspect_lo_hi", [0, 0.2]),
    ("debris_size_px", [0, 3]), ("scalebar_len_px", [0, 10]), ("scalebar_font_px", [-1, 10]),
    ("relief_field_sigma_px", [0, 20]), ("stage_lambda_range", [0, 10]), ("taper_power", 0),
    ("cross_soft_sigma", 0), ("min_width_ratio", 0),
])
def test_non_positive_sizes_fail(key, value):
    with pytest.raises(ConfigError, match=key):
        CrystalConfig.load({key: value})


@pytest.mark.parametrize("key,value", [
    ("fused_p0", 1.5), ("scalebar_prob", -0.1), ("ghost_ragged_p", 2), ("bg_gray_range", [0, 300]),
    ("tilt_center", [0.7, 0]), ("channels", 2), ("scalebar_units", []),
    ("n_rods_rng_lo_hi", [1, 2, 3, 4]), ("n_rods_rng_lo_hi", [1]),
])
def test_out_of_range_values_fail(key, value):
    with pytest.raises(ConfigError, match=key):
        CrystalConfig.load({key: value})


def test_parallel_workers_is_accepted_and_noted(caplog):
    with caplog.at_level(logging.INFO, logger="microforge.datasets.crystals.config"):
        config = CrystalConfig.load({"parallel_workers": 8})
    assert config.parallel_workers == 8
    assert "parallel_workers=8 is ignored" in caplog.text


def test_lambda_to_t_is_log_scale_and_clamped():
    assert lambda_to_t(0.1) == 0.0
    assert lambda_to_t(10.0) == 1.0
    assert lambda_to_t(1.0) == pytest.approx(0.5)
    assert lambda_to_t(0.001) == 0.0 and lambda_to_t(1e6) == 1.0


def test_sample_lambda_stays_in_range():
    import numpy as np

    config = CrystalConfig(stage_lambda_range=(0.5, 2.0))
    rng = np.random.default_rng(0)
    values = [sample_lambda(rng, config) for _ in range(200)]
    assert 0.5 <= min(values) and max(values) <= 2.0
    # log-uniform: about half the draws below the geometric mean 1.0
    assert 70 < sum(v < 1.0 for v in values) < 130


def test_params_for_t_with_two_and_three_tuples():
    config = CrystalConfig(n_rods_rng_lo_hi=(250, 400, 250), rod_len_px_lo_hi=(30, 380),
                           rod_aspect_lo_hi=(0.02, 0.15, 0.15), rod_delta_rng=(-6, 2, -1),
                           fused_p0=0.1, fused_p1=0.3)
    at0, mid, at1 = params_for_t(config, 0.0), params_for_t(config, 0.5), params_for_t(config, 1.0)
    assert (at0.n_rods, mid.n_rods, at1.n_rods) == ((250, 400), (250, 325), (250, 250))
    assert at0.rod_len_px == mid.rod_len_px == at1.rod_len_px == (30, 380)
    assert at0.rod_aspect == at1.rod_aspect == (0.02, 0.15)
    assert (at0.rod_delta, at1.rod_delta) == ((-6, 2), (-6, -1))
    assert mid.rod_delta == pytest.approx((-6, 0.5))
    assert (at0.p_fused, at1.p_fused) == (0.1, 0.3) and mid.p_fused == pytest.approx(0.2)
    assert params_for_t(config, 7.0) == at1  # t is clamped
    assert params_for_t(config.model_copy(update={"fused_enable": False}), 1.0).p_fused == 0.0
