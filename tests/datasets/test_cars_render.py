"""CARS tissue renderer and ``synth cars`` datasets (small images; one local Ray per session)."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from microforge.datasets.cars import (BRIGHT_FACTOR, CarsConfig, bright_fraction, generate_dataset, load_preset,
                                      preset_names, render_cars)
from microforge.datasets.cars.dataset import encode_uint16
from microforge.datasets.manifest import decode_image, read_manifest
from microforge.platform.cli import main
from microforge.platform.errors import ConfigError

# Every feature on, on a small canvas (counts and densities are per 512 x 512 px).
TINY = dict(size=96, follicle_count=(300, 400), follicle_radius_px=(8.0, 16.0), wall_thickness_px=(1.5, 2.5),
            droplet_density=400.0, droplet_radius_px=(1.0, 2.0))


def tiny(**changes) -> CarsConfig:
    return CarsConfig.load({**load_preset("default").to_json_dict(), **TINY, **changes})


def digest(sample) -> str:
    return hashlib.sha256(sample.image.tobytes() + sample.mask.tobytes()).hexdigest()


def fingerprint(sample) -> str:
    return digest(sample) + json.dumps([sample.follicles, sample.meta], sort_keys=True)


def test_same_seed_and_index_give_identical_output_and_others_differ():
    a, b = render_cars(tiny(), 7, 3), render_cars(tiny(), 7, 3)
    assert fingerprint(a) == fingerprint(b)
    assert digest(render_cars(tiny(), 7, 4)) != digest(a)
    assert digest(render_cars(tiny(), 8, 3)) != digest(a)


def test_render_is_identical_in_another_process():
    code = ("import hashlib, json; from microforge.datasets.cars import CarsConfig, load_preset, render_cars; "
            f"s = render_cars(CarsConfig.load({{**load_preset('default').to_json_dict(), **{TINY!r}}}), 2, 9); "
            "print(hashlib.sha256(s.image.tobytes() + s.mask.tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == digest(render_cars(tiny(), 2, 9))


def test_sixteen_bit_range_is_used_and_rarely_saturates():
    sample = render_cars(load_preset("default").model_copy(update={"size": 192}), 0, 0)
    image = sample.image
    assert image.dtype == np.uint16 and image.shape == (192, 192)
    assert image.mean() > 1500 and image.max() > 15000  # not squeezed near 0
    assert np.percentile(image, 99.9) < 60000 and sample.meta["saturated_fraction"] < 1e-3
    saturated = render_cars(tiny(adu_per_unit=60000.0), 0, 0)
    assert saturated.image.max() == 65535 and saturated.meta["saturated_fraction"] > 0


def _snr(sample) -> float:
    background = sample.image[sample.mask == 0].astype(float)
    return background.mean() / background.std()


def test_low_signal_is_darker_and_noisier_than_default():
    default, low = (load_preset(name).model_copy(update={"size": 128}) for name in ("default", "low_signal"))
    for index in range(2):
        a, b = render_cars(default, 1, index), render_cars(low, 1, index)
        assert b.image.mean() < 0.6 * a.image.mean()
        assert _snr(b) < 0.8 * _snr(a)


def test_mask_matches_the_follicle_rows():
    for index in range(3):
        sample = render_cars(tiny(), 4, index)
        mask, rows = sample.mask, sample.follicles
        assert mask.dtype == np.uint16 and mask.shape == sample.image.shape
        assert sample.meta["n_follicles"] == len(rows) > 3
        assert [r["label"] for r in rows] == list(range(1, len(rows) + 1)) and mask.max() == len(rows)
        counts = np.bincount(mask.ravel(), minlength=len(rows) + 1)
        ys, xs = np.indices(mask.shape)
        edge = set(np.unique(np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])).tolist())
        for r in rows:
            inside = mask == r["label"]
            assert r["area"] == counts[r["label"]] > 0
            assert r["centroid_x"] == pytest.approx(xs[inside].mean(), abs=1e-3)
            assert r["centroid_y"] == pytest.approx(ys[inside].mean(), abs=1e-3)
            assert r["touches_border"] == (r["label"] in edge)


def test_follicle_walls_are_brighter_than_lumens():
    sample = render_cars(tiny(line_jitter_px=0.0), 0, 1)
    mask = sample.mask.astype(int)
    boundary = np.zeros(mask.shape, bool)
    boundary[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    boundary[1:] |= mask[1:] != mask[:-1]
    from scipy.ndimage import binary_erosion
    lumen = binary_erosion(mask > 0, iterations=4)
    assert np.median(sample.image[boundary & (mask > 0)]) > 1.8 * np.median(sample.image[lumen])


def test_bright_fraction_definition():
    image = np.arange(100, dtype=np.uint16).reshape(10, 10)
    classes = np.zeros((10, 10), np.uint8)
    image[0, :3] = [189, 188, 1000]
    classes[0, :3] = 2  # walls are not background: the background is 3..99
    fraction, level = bright_fraction(image, classes)
    assert BRIGHT_FACTOR == 2.0
    assert level == np.percentile(image[classes == 0], 95, method="lower") == 94
    assert fraction == np.count_nonzero(image > 188) / 100 == 0.02  # 189 and 1000


def test_default_preset_has_under_five_percent_bright_pixels():
    config = load_preset("default").model_copy(update={"size": 256})
    fractions = [render_cars(config, 0, index).meta["bright_fraction"] for index in range(3)]
    assert all(0.002 < f < 0.05 for f in fractions), fractions


def test_presets_load():
    assert preset_names() == ["default", "dense", "low_signal", "sparse"]
    assert load_preset("default") == CarsConfig()  # the defaults are the default preset
    assert load_preset("default").size == 512
    dense, sparse = load_preset("dense"), load_preset("sparse")
    assert dense.follicle_count[0] > CarsConfig().follicle_count[1] > sparse.follicle_count[1]
    sizes = {name: render_cars(load_preset(name).model_copy(update={"size": 128}), 0, 0).meta["n_follicles"]
             for name in ("dense", "sparse")}
    assert sizes["dense"] > sizes["sparse"]


# A changed value for every key of CarsConfig (the test fails when a key is added without one).
CHANGES = dict(
    size=80, follicle_count=(150, 200), follicle_radius_px=(10.0, 12.0), follicle_irregularity=0.3,
    follicle_packing=1.2, wall_thickness_px=(3.0, 4.0), wall_brightness=(0.3, 0.4), wall_texture=1.0,
    colloid_level=(0.3, 0.4), colloid_texture=0.6, droplet_density=50.0, droplet_radius_px=(2.5, 3.0),
    droplet_brightness=(5.0, 6.0), interstitial_level=0.4, interstitial_texture=0.8, nonresonant_offset=0.3,
    line_jitter_px=3.0, stripe_gain=0.2, psf_sigma_px=2.0, photons_per_unit=20.0, adu_per_unit=5000.0,
    dark_offset_adu=100.0, read_noise_adu=500.0, saturation_adu=20000,
)


def test_every_key_takes_effect():
    assert set(CHANGES) == set(CarsConfig.model_fields)
    base = fingerprint(render_cars(tiny(), 3, 0))
    for key, value in CHANGES.items():
        assert fingerprint(render_cars(tiny(**{key: value}), 3, 0)) != base, key


@pytest.mark.parametrize("change,message", [
    ({"follicle_cuont": (1, 2)}, "unknown key 'follicle_cuont' (did you mean 'follicle_count'?)"),
    ({"size": 4}, "CarsConfig.size"),
    ({"follicle_radius_px": (30.0, 10.0)}, "follicle_radius_px"),
    ({"saturation_adu": 70000}, "saturation_adu"),
    ({"photons_per_unit": 0}, "photons_per_unit"),
])
def test_bad_config_is_one_line_config_error(change, message):
    with pytest.raises(ConfigError) as info:
        render_cars({**TINY, **change}, 0, 0)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'low_signal'"):
        load_preset("low_signl")


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_dataset_is_byte_identical_with_one_or_three_workers_and_resumes(ray_local, tmp_path, capsys):
    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps(tiny().to_json_dict()))
    code = main(["synth", "cars", "--preset", str(preset), "--n", "12", "--out", str(tmp_path / "w1"),
                 "--size", "64", "--seed", "3", "--format", "tif", "--workers", "1"])
    assert code == 0
    text = capsys.readouterr().out
    assert "images: 12 (12 rendered" in text and "follicles" in text
    three = generate_dataset(tiny(size=64), 12, tmp_path / "w3", seed=3, image_format="tif", workers=3)
    assert three.rendered == 12
    a, b = tree_bytes(tmp_path / "w1"), tree_bytes(tmp_path / "w3")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []

    out = tmp_path / "w1"
    rows = read_manifest(out).to_pylist()
    info = json.loads((out / "dataset.json").read_text())
    assert info["kind"] == "cars" and info["config"]["size"] == 64 and info["status"] == "complete"
    assert info["counts"]["follicles"] == sum(r["n_follicles"] for r in rows)
    for r in rows[:4]:
        image, mask = decode_image(out / r["image"]), decode_image(out / r["mask"])
        assert image.dtype == mask.dtype == np.uint16 and image.shape == (64, 64)
        sample = render_cars(tiny(size=64), 3, r["index"])
        np.testing.assert_array_equal(image, sample.image)
        np.testing.assert_array_equal(mask, sample.mask)
        assert r["follicles"] == sample.follicles and r["n_follicles"] == len(sample.follicles)
        assert r["bright_fraction"] == sample.meta["bright_fraction"]

    (out / "masks" / "0000002.tif").unlink()
    again = generate_dataset(tiny(size=64), 12, out, seed=3, image_format="tif", workers=2)
    assert (again.rendered, again.reused) == (1, 11) and tree_bytes(out) == a


def test_png_and_tif_encodings_are_deterministic_and_lossless(tmp_path):
    image = render_cars(tiny(), 0, 0).image
    for fmt in ("png", "tif"):
        data = encode_uint16(image, fmt)
        assert data == encode_uint16(image, fmt)
        (tmp_path / f"x.{fmt}").write_bytes(data)
        decoded = decode_image(tmp_path / f"x.{fmt}")
        assert decoded.dtype == np.uint16
        np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("args,message", [
    (["--n", "0"], "n must be a positive"),
    (["--n", "3", "--preset", "dens"], "did you mean 'dense'"),
    (["--n", "3", "--size", "8"], "CarsConfig.size"),
    (["--n", "3", "--workers", "0"], "workers must be positive"),
])
def test_cli_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "ds"
    assert main(["synth", "cars", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()
