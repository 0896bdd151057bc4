import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label

from microforge.datasets.blobs import RENDERER_VERSION, BlobConfig, render_blob, render_blob_batch
from microforge.platform.errors import ConfigError

SIZE = 96


@pytest.fixture(scope="module")
def config():
    return BlobConfig(size=SIZE)


@pytest.fixture(scope="module")
def samples(config):
    return [render_blob(config, 11, i) for i in range(12)]


def dot_footprint(x, y, r, size):
    """Pixels an anti-aliased disc touches: centre within r + 0.5 of (x, y)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    return (xx - x) ** 2 + (yy - y) ** 2 < (r + 0.5) ** 2


def test_sample_arrays(samples):
    s = samples[0]
    assert s.image.shape == s.clean.shape == s.mask.shape == (SIZE, SIZE)
    assert s.image.dtype == s.clean.dtype == np.float32 and s.mask.dtype == np.uint8
    assert 0.0 <= s.image.min() and s.image.max() <= 1.0
    assert set(np.unique(s.mask)) == {0, 1}
    assert isinstance(RENDERER_VERSION, str) and RENDERER_VERSION


def test_mask_is_one_filled_region_clear_of_the_border(samples):
    # Extreme settings make sub-pixel spikes and gaps, which the renderer must repair.
    spiky = BlobConfig(size=48, control_points=(40, 40), radius_variation=0.8, angle_jitter=0.45)
    for s in samples + [render_blob(spiky, 0, i) for i in range(10)]:
        assert label(s.mask, connectivity=1).max() == 1
        assert np.array_equal(ndimage.binary_fill_holes(s.mask), s.mask.astype(bool))
        assert not (s.mask[0].any() or s.mask[-1].any() or s.mask[:, 0].any() or s.mask[:, -1].any())


def test_outline_passes_through_the_control_points(samples):
    for s in samples:
        assert 5 <= len(s.control_points) <= 15
        for x, y in s.control_points:
            col, row = int(x), int(y)
            window = s.mask[row - 1 : row + 2, col - 1 : col + 2]
            assert window.min() == 0 and window.max() == 1  # on the edge


def test_dots_lie_inside_the_mask(samples):
    for s in samples:
        assert 15 <= len(s.dots) <= 80 and s.meta["n_dots"] == len(s.dots)
        assert np.all((s.dots[:, 2] >= 2.0) & (s.dots[:, 2] <= 6.0))
        for x, y, r in s.dots:
            assert s.mask[int(y), int(x)] == 1
            assert s.mask[dot_footprint(x, y, r, SIZE)].all()
        assert np.all(s.clean[s.mask == 0] == 0.0)  # nothing drawn outside the shape


def test_exact_dot_count_and_regular_grid_without_jitter():
    config = BlobConfig(size=SIZE, dots=(20, 20), dot_radius=(2, 2), dot_jitter=0.0)
    s = render_blob(config, 1, 0)
    assert len(s.dots) == 20
    # Without jitter the dots sit on a grid: they share a few rows.
    assert len(np.unique(np.round(s.dots[:, 1], 6))) < 10


def test_noise_settings_do_not_change_shape_or_dots(config):
    a = render_blob(config, 5, 3, noise_scale=0.1, mixed_prob=0.0)
    b = render_blob(config, 5, 3, noise_scale=1.0, mixed_prob=1.0)
    c = render_blob(config.model_copy(update={"noise_types": ("speckle",)}), 5, 3)
    for other in (b, c):
        assert np.array_equal(a.mask, other.mask)
        assert np.array_equal(a.clean, other.clean)
        assert np.array_equal(a.dots, other.dots)
    assert not np.array_equal(a.image, b.image)
    # Dot settings do not move the shape either.
    d = render_blob(BlobConfig(size=SIZE, dots=(30, 30)), 5, 3)
    assert np.array_equal(a.mask, d.mask)


def test_deterministic_and_pure(config):
    a, b = render_blob(config, 7, 4), render_blob(config, 7, 4)
    assert np.array_equal(a.image, b.image) and a.meta == b.meta
    assert not np.array_equal(a.mask, render_blob(config, 7, 5).mask)
    assert not np.array_equal(a.mask, render_blob(config, 8, 4).mask)
    batch = render_blob_batch(config, 7, np.array([9, 4, 2]))
    assert np.array_equal(batch["image"][1, 0], a.image)
    assert np.array_equal(batch["clean"][1, 0], a.clean)
    assert np.array_equal(batch["mask"][1, 0], a.mask.astype(np.float32))
    assert batch["snr_db"][1] == np.float32(a.meta["snr_db"])
    assert batch["index"].tolist() == [9, 4, 2]


def test_batch_shapes(config):
    batch = render_blob_batch(config, 0, range(3), noise_scale=0.5)
    for key in ("image", "clean", "mask"):
        assert batch[key].shape == (3, 1, SIZE, SIZE) and batch[key].dtype == np.float32
    assert set(np.unique(batch["mask"])) == {0.0, 1.0}
    assert batch["snr_db"].shape == (3,) and batch["snr_db"].dtype == np.float32
    with pytest.raises(ConfigError, match="no indices"):
        render_blob_batch(config, 0, [])


def test_meta_records_noise_and_overrides(config):
    s = render_blob(config, 3, 1, noise_scale=0.35, mixed_prob=1.0)
    meta = json.loads(json.dumps(s.meta))
    assert meta == s.meta
    assert meta["noise_scale"] == 0.35 and meta["mixed_prob"] == 1.0
    assert meta["noise_type"] == "mixed" and 2 <= len(meta["noise"]["components"]) <= 3
    assert meta["n_control_points"] == len(s.control_points)
    assert meta["seed"] == 3 and meta["index"] == 1
    defaults = render_blob(config, 3, 1).meta
    assert defaults["noise_scale"] == config.noise_scale and defaults["mixed_prob"] == config.mixed_prob


def test_realised_snr_falls_with_noise_scale():
    config = BlobConfig(size=64, noise_types=("gaussian",))
    low = np.mean([render_blob(config, 0, i, noise_scale=0.1).meta["snr_db"] for i in range(6)])
    high = np.mean([render_blob(config, 0, i, noise_scale=1.0).meta["snr_db"] for i in range(6)])
    assert low > high


def test_intensity_settings():
    base = dict(size=64, background=0.1, fill_intensity=0.1, outline_intensity=0.4, dots=(15, 15))
    s = render_blob(BlobConfig(**base), 2, 0)
    assert np.allclose(s.clean[s.mask == 0], 0.1)
    assert np.isclose(s.clean[s.mask == 1], 0.2).mean() > 0.2  # plain interior
    assert np.isclose(s.clean, 0.4).any()  # outline
    dark = render_blob(BlobConfig(**base, polarity="dark"), 2, 0)
    assert np.allclose(dark.clean, 1.0 - s.clean)


def test_config_round_trip(tmp_path):
    path = tmp_path / "blobs.json"
    config = BlobConfig(size=128, noise_types=["gaussian", "poisson", "mixed"], mixed_prob=0.5)
    path.write_text(json.dumps(config.to_json_dict()))
    assert BlobConfig.load(path) == config
    assert np.array_equal(render_blob(str(path), 1, 2).image, render_blob(config, 1, 2).image)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"sise": 64}, "did you mean 'size'"),
        ({"size": 16}, "size"),
        ({"dots": [80, 15]}, "lo > hi"),
        ({"control_points": [2, 5]}, "control_points"),
        ({"noise_types": ["gausian"]}, "did you mean 'gaussian'"),
        ({"noise_types": ["gaussian", "gaussian"]}, "twice"),
        ({"noise_types": ["gaussian", "mixed"]}, "at least 2 base types"),
        ({"noise_types": []}, "empty"),
        ({"background": 0.7}, "dot_intensity"),
        ({"noise_scale": 1.2}, "noise_scale"),
        ({"polarity": "inverted"}, "polarity"),
        ({"size": 32, "dot_radius": [2, 16]}, "dot_radius"),
    ],
)
def test_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        BlobConfig.load(data)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": -1}, "seed"),
        ({"index": 1.5}, "index"),
        ({"noise_scale": 1.5}, "noise_scale"),
        ({"mixed_prob": -0.2}, "mixed_prob"),
    ],
)
def test_render_argument_errors(config, kwargs, message):
    args = {"seed": 0, "index": 0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        render_blob(config, **args)
