"""Serve building blocks without a running server: config, paths, detectors, statistics, jobs' summaries."""

from __future__ import annotations

import math
import textwrap

import cv2
import numpy as np
import pytest

from microforge.platform.errors import ConfigError
from microforge.serve.api import cors_options
from microforge.serve.config import ServeConfig, load_serve_config
from microforge.serve.images import PreprocPipeline, apply_pipeline, detection_stats
from microforge.serve.jobs import frame_times, summarise
from microforge.serve.detection import boxes_from_mask, detect_contours, load_detector, normalise_detections
from microforge.serve.discovery import BUILTIN_ID, ModelError, list_models
from microforge.serve.paths import PathRejected, check_name, resolve_inside


def test_config_defaults_are_safe():
    config = ServeConfig()
    assert config.host == "127.0.0.1" and config.cors_origins == [] and config.api_token is None
    assert cors_options(config.cors_origins) is None  # CORS off


def test_config_from_yaml_with_overrides(tmp_path, monkeypatch):
    path = tmp_path / "serve.yaml"
    path.write_text(textwrap.dedent("""
        port: 9000
        deployments:
          SegmentationModel:
            autoscaling: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 8}
            ray_actor_options: {num_cpus: 2, num_gpus: 0.5}
            max_batch_size: 16
    """))
    config = load_serve_config(path, port=9001, data_root=str(tmp_path / "d"), models_dir=str(tmp_path / "m"))
    assert config.port == 9001
    options = config.deployments["SegmentationModel"].serve_options()
    assert options["autoscaling_config"]["max_replicas"] == 4 and "num_replicas" not in options
    assert options["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0.5}
    assert config.deployments["Detector"].serve_options()["num_replicas"] == 1
    monkeypatch.setenv("MICROFORGE_API_TOKEN", "s3cret")
    resolved = config.resolved()
    assert resolved.api_token == "s3cret" and "api_token" not in resolved.to_json_dict()
    assert resolved.settings()["api_token"] == "s3cret"


@pytest.mark.parametrize("data, message", [
    ({"prot": 1}, "did you mean 'port'"),
    ({"port": 70000}, "port"),
    ({"deployments": {"Renderer": {}}}, "unknown deployment 'Renderer'"),
    ({"deployments": {"Detector": {"num_replicas": 2, "autoscaling": {}}}}, "not both"),
    ({"deployments": {"Detector": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}}}, "exceeds max_replicas"),
    ({"deployments": {"Detector": {"ray_actor_options": {"num_cpus": -1}}}}, "num_cpus"),
    ({"cors_origins": ["evil.example"]}, "http://"),
    ({"deployments": {"SegmentationModel": {"max_batch_size": 64, "max_ongoing_requests": 8}}}, "max_ongoing"),
    ({"limits": {"max_preview_pixels": 10**12}}, "max_preview_pixels"),
])
def test_config_errors_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ServeConfig.load(data)


def test_data_root_and_models_dir_must_not_overlap(tmp_path):
    with pytest.raises(ConfigError, match="must not contain each other"):
        ServeConfig(data_root=str(tmp_path), models_dir=str(tmp_path / "models")).resolved()
    with pytest.raises(ConfigError, match="must not contain each other"):
        ServeConfig(data_root=str(tmp_path / "x"), models_dir=str(tmp_path / "x")).resolved()


def test_cors_never_combines_wildcard_with_credentials():
    assert cors_options(["*"])["allow_credentials"] is False
    listed = cors_options(["http://a.example"])
    assert listed["allow_credentials"] is True and listed["allow_origins"] == ["http://a.example"]


def test_app_builder_builds_an_application(tmp_path):
    from ray.serve import Application

    from microforge.serve.app import app_builder

    path = tmp_path / "serve.yaml"
    path.write_text("deployments:\n  CrystalRenderer: {num_replicas: 3}\n")
    app = app_builder({"config": str(path), "data_root": str(tmp_path / "d"), "models_dir": str(tmp_path / "m")})
    assert isinstance(app, Application) and (tmp_path / "d").is_dir()
    with pytest.raises(ConfigError):
        app_builder({"data_root": str(tmp_path), "models_dir": str(tmp_path / "inside")})


def test_resolve_inside(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("x")
    (root / "a" / "link").symlink_to(tmp_path / "outside.txt")
    assert resolve_inside(root, "a/b.png") == (root / "a" / "b.png").resolve()
    for bad in ("../x", "a/../../x", "/etc/passwd", "", "~root", "a\\b", "a/\x00"):
        with pytest.raises(PathRejected) as info:
            resolve_inside(root, bad)
        assert info.value.status == 400
    with pytest.raises(PathRejected) as info:
        resolve_inside(root, "a/link")
    assert info.value.status == 403
    assert check_name("my-preset_1.v2") == "my-preset_1.v2"
    for bad in (".hidden", "a/b", "x; rm -rf /", "", "a" * 200, "name."):
        with pytest.raises(PathRejected):
            check_name(bad)


def test_builtin_detector_finds_rods_with_radian_angles():
    image = np.full((120, 160), 170, np.uint8)
    box = cv2.boxPoints(((80.0, 60.0), (80.0, 10.0), 30.0))
    cv2.fillPoly(image, [np.round(box).astype(np.int32)], 60)
    [det] = detect_contours(image)
    assert abs(det["angle"] - math.radians(30)) < 0.03 and abs(det["w"] - 80) < 4 and det["h"] < det["w"]
    assert detect_contours(np.full((50, 50), 100, np.uint8)) == []
    mask = np.zeros((50, 50), np.uint8)
    mask[20:25, 5:45] = 1
    [horizontal] = boxes_from_mask(mask)
    assert abs(horizontal["angle"]) < 1e-6 or abs(abs(horizontal["angle"]) - math.pi / 2) > 1


def test_plugin_output_is_checked():
    good = normalise_detections([{"x": 1, "y": 2, "w": 3, "h": 4, "angle": math.pi}], "plugin")
    assert good == [{"x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0, "angle": 0.0, "confidence": 1.0, "class": "object"}]
    for bad in ({"x": 1}, [{"x": 1, "y": 2, "w": 3, "h": 4}], [{"x": "1", "y": 2, "w": 3, "h": 4, "angle": 0}],
                [{"x": float("nan"), "y": 2, "w": 3, "h": 4, "angle": 0}],
                [{"x": 1, "y": 2, "w": -3, "h": 4, "angle": 0}]):
        with pytest.raises(ModelError) as info:
            normalise_detections(bad, "plugin 'p'")
        assert info.value.status == 500


def test_models_are_found_only_inside_the_models_dir(tmp_path):
    models = tmp_path / "models"
    (models / "det").mkdir(parents=True)
    (models / "det" / "model.py").write_text(
        "def infer(m, i):\n    return [{'x': 1, 'y': 1, 'w': 2, 'h': 1, 'angle': 0}]\n")
    (models / "gan").mkdir()
    (models / "gan" / "model.json").write_text('{"architecture": {"name": "fastgan", "config": {}}}')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.py").write_text("raise SystemExit('must never run')\n")
    (models / "sneaky").symlink_to(outside)
    ids = [m["id"] for m in list_models(models)]
    assert ids == [BUILTIN_ID, "det"]
    assert load_detector(models, "det").infer(np.zeros((4, 4), np.uint8))[0]["w"] == 2.0
    with pytest.raises(PathRejected):
        load_detector(models, "sneaky")
    with pytest.raises(ModelError, match="neither"):
        load_detector(models, "gan")


def test_detection_stats():
    empty = detection_stats([])
    assert empty["count"] == 0 and empty["mean_length"] == 0.0 and empty["lengths"] == []
    stats = detection_stats([{"w": 4.0, "h": 10.0}, {"w": 6.0, "h": 2.0}])
    assert stats["lengths"] == [10.0, 6.0] and stats["widths"] == [4.0, 2.0]
    assert stats["aspect_ratios"] == [2.5, 3.0] and stats["mean_area"] == 26.0


def test_timelapse_summary():
    assert frame_times(["f_2.png", "f_10.png", "g_1.png"]) == [2.0, 10.0, 1.0]
    assert frame_times(["a.png", "b.png"]) == [0.0, 1.0]
    rows = [{"index": 0, "name": "a", "time": 1.0, "stats": detection_stats([{"w": 10, "h": 2}, {"w": 6, "h": 2}])},
            {"index": 1, "name": "b", "time": 2.0, "stats": detection_stats([{"w": 8, "h": 4}])},
            {"index": 2, "name": "c", "time": 3.0, "error": "unreadable"}]
    result = summarise(rows)
    assert [t["time"] for t in result["per_time"]] == [1.0, 2.0] and result["failed"] == 1
    first = result["per_time"][0]
    assert first["mean_length"] == 8.0 and first["std_length"] == 2.0 and first["count"] == 2.0
    assert sum(first["hist_length"]["counts"]) == 2 and len(first["hist_length"]["edges"]) == 21
    assert first["hist_length"]["edges"] == result["per_time"][1]["hist_length"]["edges"]


def test_preview_t_maps_back_to_the_same_stage():
    from microforge.datasets.crystals import lambda_to_t
    from microforge.serve.deployments import t_to_lambda

    for t in (0.0, 0.25, 0.5, 1.0):
        assert abs(lambda_to_t(t_to_lambda(t)) - t) < 1e-9


def test_preprocessing_pipeline():
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    assert apply_pipeline(image, PreprocPipeline()).shape == (40, 60, 3)
    inverted = apply_pipeline(image, PreprocPipeline(invert=True))
    assert np.array_equal(inverted, 255 - image)
    gray = apply_pipeline(image, PreprocPipeline(desaturate=1.0))
    assert np.abs(gray[..., 0].astype(int) - gray[..., 2]).max() <= 1
    full = PreprocPipeline(desaturate=0.5, clahe_enable=True, clahe_tile_grid=4, equalize=True, gradient_strength=0.5)
    assert apply_pipeline(image[..., 0], full).shape == (40, 60, 3)
    with pytest.raises(ConfigError):
        PreprocPipeline.load({"clahe_tile_grid": 65})


def legacy_input() -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    return ((np.hypot(yy - 16, xx - 16) < 9) * 50000 + 5000).astype(np.uint16)


def test_models_are_classified_by_their_cards_task(tmp_path):
    import shutil

    from microforge.serve.tasks import DEPLOYMENT_NAMES, TASKS
    from microforge.trainers.workload import SERVE_TASKS

    from microforge.serve.colorization import load_colorizer

    from .conftest import LEGACY_UNET, save_colorizer, save_unet
    from .tiny_generator import save_tiny_generator

    models = tmp_path / "models"
    shutil.copytree(LEGACY_UNET, models / "old")
    save_unet(models / "new")
    save_tiny_generator(models / "gans" / "g")
    save_colorizer(models / "cyclegan")
    listed = {m["id"]: (m["type"], m["task"]) for m in list_models(models)}
    assert listed == {BUILTIN_ID: ("builtin", "detect"), "old": ("segmentation", "segment"),
                      "new": ("segmentation", "segment"), "gans/g": ("generator", "generate"),
                      "cyclegan": ("colorizer", "colorize")}
    with pytest.raises(ModelError, match="not a detector"):
        load_detector(models, "gans/g")
    for other in ("gans/g", "new", "old"):
        with pytest.raises(ModelError, match="not a colorize artifact"):
            load_colorizer(models, other)
    assert load_colorizer(models, "cyclegan").info["invert_input"] is True
    # every model task of the table is a workload task; the config keys follow the table
    assert {t.name for t in TASKS if t.accepts} <= set(SERVE_TASKS)
    assert set(ServeConfig().deployments) == set(DEPLOYMENT_NAMES)


def test_a_crystals_artifact_is_a_detector_and_the_newest_one_is_the_default(tmp_path):
    """Listed as ``detector`` (task ``detect``); selected at start unless ``default_models.detect``
    names another; without one the contour detector stays the default."""
    import os

    from microforge.serve.detection import default_detector
    from microforge.serve.tasks import initial_selection

    from .conftest import save_crystal_detector, save_unet

    models = tmp_path / "models"
    models.mkdir()
    assert default_detector(models) == BUILTIN_ID and default_detector(None) == BUILTIN_ID
    save_crystal_detector(models / "crystals" / "old")
    os.utime(models / "crystals" / "old" / "model.json", (1_000_000_000, 1_000_000_000))
    save_crystal_detector(models / "crystals" / "new", seed=1)
    save_unet(models / "unet")  # newer still, but a segmentation model
    listed = {m["id"]: (m["type"], m["task"]) for m in list_models(models)}
    assert listed["crystals/new"] == ("detector", "detect") and listed["unet"] == ("segmentation", "segment")
    assert default_detector(models) == "crystals/new"
    assert default_detector(models, "crystals/old") == "crystals/old"
    assert initial_selection({"detect": default_detector(models)})["detector"] == "crystals/new"
    assert initial_selection()["detector"] == BUILTIN_ID
    info = load_detector(models, "crystals/new").info
    assert (info["type"], info["task"], info["workload"], info["architecture"]) == \
        ("detector", "detect", "crystals", "CrystalDetector")


def test_serving_uses_the_artifacts_transform_and_eval_threshold(tmp_path):
    """A 16-bit image: the served mask is predict_masks' mask (prob > sigmoid(threshold)), and a
    format-1 artifact reproduces its reference logits."""
    import shutil

    from microforge.serve.segmentation import load_segmentation, segmentation_outputs
    from microforge.trainers.registry import load_artifact
    from microforge.trainers.unet.evaluate import predict_masks

    from .conftest import LEGACY_LOGITS, LEGACY_UNET, save_unet

    shutil.copytree(LEGACY_UNET, tmp_path / "old")
    image = legacy_input()
    net = load_segmentation(tmp_path, "old")
    prob = net.predict([image])[0]
    expected = 1.0 / (1.0 + np.exp(-np.load(LEGACY_LOGITS).astype(np.float64).reshape(prob.shape)))
    np.testing.assert_allclose(prob, expected, atol=1e-4)
    save_unet(tmp_path / "new", threshold=0.05)
    net = load_segmentation(tmp_path, "new")
    big = np.random.default_rng(0).integers(0, 65536, (40, 52), dtype=np.uint16)
    mask = segmentation_outputs(net.predict([big])[0], net.threshold, None)["mask"]
    assert np.array_equal(mask > 0, predict_masks(load_artifact(tmp_path / "new"), big)[0, 0] > 0)


def test_colorize_images_reads_domain_a_pads_and_crops(tmp_path):
    """colorize_images: gray, BGR, BGRA and 16-bit inputs meet as the unaligned reader's uint8
    gray; invert_input is 255 - x; any size comes back the size it went in (reflect padding to
    the size multiple, and up to twice it); a batch gives what single images give."""
    from microforge.trainers.predict import colorize_images, gray_uint8
    from microforge.trainers.registry import load_artifact

    from .conftest import save_colorizer

    save_colorizer(tmp_path / "c", invert_a=False)
    artifact = load_artifact(tmp_path / "c")
    generator, transform = artifact["generator_ab"], artifact.transform

    def run(images, **kw):
        return colorize_images(generator, transform, images, size_multiple=4, **kw)

    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (13, 22, 3), dtype=np.uint8)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    deep = gray.astype(np.uint16) * 257 + rng.integers(0, 100, gray.shape).astype(np.uint16)
    assert np.array_equal(gray_uint8(deep), gray)  # /257, rounded
    assert np.array_equal(gray_uint8(np.dstack([bgr, np.full(gray.shape, 7, np.uint8)])), gray)  # alpha ignored
    outs = run([gray, bgr, deep, gray[:, :, None]])
    assert all(o.shape == (13, 22, 3) and o.dtype == np.uint8 for o in outs)
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])
    assert np.array_equal(run([gray], invert_input=True)[0], run([255 - gray])[0])
    for shape in [(1, 1), (3, 5), (8, 8), (9, 31)]:
        assert run([rng.integers(0, 256, shape, dtype=np.uint8)])[0].shape == (*shape, 3)
    # a batch of several shapes (one forward pass each) gives what single images give
    mixed = [gray, gray[:9, :10], bgr[:12, :20]]
    for together, alone in zip(run(mixed), (run([m])[0] for m in mixed)):
        assert np.abs(together.astype(int) - alone).max() <= 1
    assert run([]) == []
    with pytest.raises(ConfigError, match="8- or 16-bit"):
        run([gray.astype(np.float32)])
    with pytest.raises(ConfigError, match="shape"):
        run([np.zeros((4, 4, 2), np.uint8)])
    from microforge.trainers.cyclegan.model import ResnetGenerator

    with pytest.raises(ConfigError, match="3 channels"):
        colorize_images(ResnetGenerator(1, 1, 4, 1), transform, [gray])


def test_a_demo_detector_this_network_cannot_load_is_trained_anew(tmp_path, caplog):
    from microforge.platform.artifact import ComponentWeights, save_artifact
    from microforge.platform.imports import object_path
    from microforge.serve.demo_detector import detector_dir, detector_ready
    from microforge.trainers.detector import detector_from_preset
    from microforge.trainers.detector.workload import CRYSTALS

    from .conftest import save_crystal_detector

    save_crystal_detector(detector_dir(tmp_path))
    assert detector_ready(tmp_path)
    # One saved by a version whose network had no end-distance head: complete and verified, but
    # its weights do not fit this network.
    model = detector_from_preset("tiny")
    older = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.end_distance")}
    save_artifact(detector_dir(tmp_path), {"model": ComponentWeights(object_path(type(model)), model.config, older)},
                  workload=CRYSTALS.name, task=CRYSTALS.serve_task, transform=dict(CRYSTALS.transform),
                  preprocessing={}, metrics={}, provenance={"test": True})
    assert not detector_ready(tmp_path)
    assert "cannot be used" in caplog.text and "heads.end_distance" in caplog.text
