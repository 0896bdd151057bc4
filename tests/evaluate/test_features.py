"""Feature extractors: texture separation, full bit depth, Inception from local weights, artifacts."""

import numpy as np
import pytest
import torch

from microforge.evaluate.compare import measure_images
from microforge.evaluate.distances import frechet_distance, gaussian_stats, kernel_distance
from microforge.evaluate.features import build_extractor, parse_feature_spec
from microforge.evaluate.images import find_images, to_float
from microforge.evaluate.inception import InceptionV3Features, load_inception
from microforge.platform.errors import ConfigError

from .conftest import blobs, write_set


def _features(path, spec="texture"):
    return measure_images(list(find_images(path).paths), parse_feature_spec(spec), workers=0)["features"]


@pytest.fixture(scope="module")
def texture_features(image_sets):
    return {name: _features(path) for name, path in image_sets.items()}


@pytest.mark.parametrize("other", ["other", "blurred", "noisy"])
def test_texture_distances_separate_seeds_from_different_looking_sets(texture_features, other):
    a, b, c = texture_features["a"], texture_features["b"], texture_features[other]
    fd_same = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    fd_other = frechet_distance(*gaussian_stats(a), *gaussian_stats(c))
    assert fd_same < fd_other
    assert kernel_distance(a, b)[0] < kernel_distance(a, c)[0]


def test_texture_features_are_deterministic(image_sets, texture_features):
    np.testing.assert_array_equal(_features(image_sets["a"]), texture_features["a"])


def test_sixteen_bit_images_are_not_truncated(tmp_path):
    dim = blobs(5, n=4) * (200 / 65535)  # all values below one 8-bit step
    deep = write_set(tmp_path / "deep", dim)
    shallow = write_set(tmp_path / "shallow", np.round(dim * 255) / 255)  # its 8-bit-quantised copy
    x = to_float(np.array([[0, 1], [65534, 65535]], np.uint16))
    assert x.dtype == np.float32 and x[0, 0, 1] == pytest.approx(1 / 65535)
    f_deep, f_shallow = _features(deep), _features(shallow)
    assert np.abs(f_deep - f_shallow).max() > 0.1
    stats = measure_images(list(find_images(deep).paths), parse_feature_spec("texture"), workers=0)
    assert stats["std_intensity"].min() > 0 and stats["edge_fraction"].max() > 0


def test_inception_with_random_weights_gives_finite_distances(tmp_path, image_sets):
    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save(InceptionV3Features().state_dict(), weights)
    spec = f"inception:{weights}"
    paths = list(find_images(image_sets["a"], max_images=2).paths) + list(find_images(image_sets["b"],
                                                                                       max_images=2).paths)
    features = measure_images(paths, parse_feature_spec(spec), workers=0)["features"]  # 299 px: slow on a CPU
    assert features.shape == (4, 2048) and np.isfinite(features).all()
    fd = frechet_distance(*gaussian_stats(features[:2]), *gaussian_stats(features[2:]))
    kid = kernel_distance(features[:2], features[2:])
    assert np.isfinite(fd) and np.isfinite(kid).all()


def test_inception_state_dict_layout_is_torchvisions():
    keys = InceptionV3Features().state_dict()
    assert "Conv2d_1a_3x3.conv.weight" in keys and "Mixed_7c.branch_pool.bn.running_var" in keys
    assert keys["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)


@pytest.mark.parametrize("content", [b"not a torch file", None, "mismatch"])
def test_unreadable_or_mismatched_inception_weights_are_one_line_errors(tmp_path, content):
    weights = tmp_path / "weights.pth"
    if content == "mismatch":
        torch.save({"conv.weight": torch.zeros(3)}, weights)
    elif content is not None:
        weights.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_inception(weights)
    assert "\n" not in str(info.value) and str(weights) in str(info.value)


def test_artifact_features_pool_the_widest_conv_layer(tmp_path, image_sets):
    from microforge.platform.artifact import ComponentWeights, save_artifact
    from microforge.trainers.unet import unet_from_preset

    torch.manual_seed(0)
    model = unet_from_preset("tiny")
    save_artifact(tmp_path / "unet", {"model": ComponentWeights("microforge.trainers.unet.model:AttentionUNet",
                                                                model.config, model.state_dict())},
                  workload="delineation", task="segment", transform={"name": "unit_range", "params": {}},
                  preprocessing={}, metrics={}, provenance={})
    features = _features(image_sets["a"], f"artifact:{tmp_path / 'unet'}:model")
    widest = model.config["base_channels"] * 2 ** (model.config["depth"] - 1)
    assert features.shape == (20, widest) and np.isfinite(features).all()
    sub = _features(image_sets["a"], f"artifact:{tmp_path / 'unet'}:model.encoder.0")
    assert sub.shape == (20, model.config["base_channels"])
    with pytest.raises(ConfigError, match="no submodule"):
        build_extractor(f"artifact:{tmp_path / 'unet'}:model.nothing")


def test_unknown_feature_spec_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'texture'"):
        parse_feature_spec("textur")
    with pytest.raises(ConfigError, match="artifact:DIR:COMPONENT"):
        parse_feature_spec("artifact:only-a-dir")
