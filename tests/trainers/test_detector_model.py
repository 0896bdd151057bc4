"""Crystal detector: geometry, network shapes, target encoding / decoding, augmentation, loss."""

import math

import cv2
import numpy as np
import pytest
import torch

from microforge.datasets.obb import box_corners
from microforge.datasets.rotated import rotated_iou, rotated_iou_matrix, rotated_nms
from microforge.platform.errors import ConfigError
from microforge.trainers import EpochBatches
from microforge.trainers.detector.data import render_crystal_tiles
from microforge.trainers.detector.lightning import DetectorModule, detector_loss, window_count_errors
from microforge.trainers.detector.model import HEADS, detector_from_preset
from microforge.trainers.detector.predict import TilingSettings, detect_image, recorded_count_score, recorded_scale
from microforge.trainers.detector.targets import (COUNT_SCORE, COUNT_SCORE_GRID, REG_MIN_WEIGHT, Augmentation, augment,
                                                  DecodeSettings, decode_maps, encode_targets, probe_ends, rescale,
                                                  scale_boxes)

@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on 2 shared cores, a second spinning OpenMP thread costs 100x a step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL_CRYSTALS = {"width": 96, "height": 96, "n_rods_rng_lo_hi": [4, 10], "rod_len_px_lo_hi": [16, 48],
                  "scalebar_enable": False}


def random_boxes(n, size, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(8, size - 8, n), rng.uniform(8, size - 8, n), rng.uniform(16, 60, n),
                     rng.uniform(2.5, 8, n), rng.uniform(-math.pi / 2, math.pi / 2, n)], axis=1)


# -- rotated geometry ---------------------------------------------------------------------------


def test_rotated_iou_known_cases():
    assert rotated_iou((0, 0, 10, 2, 0.3), (0, 0, 10, 2, 0.3)) == pytest.approx(1.0)
    assert rotated_iou((0, 0, 10, 2, 0.0), (5, 0, 10, 2, 0.0)) == pytest.approx(10 / 30)  # half overlap
    assert rotated_iou((0, 0, 10, 2, 0.0), (100, 0, 10, 2, 0.0)) == 0.0
    # a cross: two 10 x 2 rods at right angles share a 2 x 2 square
    assert rotated_iou((0, 0, 10, 2, 0.0), (0, 0, 10, 2, math.pi / 2)) == pytest.approx(4 / 36)
    # two rods on one line, shifted along it (collinear edges: rounding must not make them cross)
    for angle in (0.0, 0.66450471, -1.2, math.pi / 2):
        shifted = (30 * math.cos(angle), 30 * math.sin(angle), 40, 4, angle)
        assert rotated_iou((0, 0, 40, 4, angle), shifted) == pytest.approx(1 / 7)
    # the same rod described with its angle turned by pi is the same rod
    assert rotated_iou((3, 4, 20, 3, 0.2), (3, 4, 20, 3, 0.2 - math.pi)) == pytest.approx(1.0)
    # square rotated 45 degrees inside a square: exact octagon area
    inner = rotated_iou((0, 0, 2, 2, 0.0), (0, 0, 2, 2, math.pi / 4))
    octagon = 8 * (math.sqrt(2) - 1)
    assert inner == pytest.approx(octagon / (8 - octagon))
    a, b = random_boxes(12, 64, 1), random_boxes(9, 64, 2)
    matrix = rotated_iou_matrix(a, b)
    assert matrix.shape == (12, 9)
    assert matrix[3, 4] == pytest.approx(rotated_iou(a[3], b[4]))


def test_rotated_nms_keeps_crossing_rods_and_drops_duplicates():
    boxes = np.array([[50, 50, 40, 4, 0.0], [51, 50, 40, 4, 0.02], [50, 50, 40, 4, math.pi / 2]])
    keep = rotated_nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


# -- network --------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset, params", [("tiny", 96_296), ("small", 558_496), ("standard", 1_423_656)])
def test_presets_parameter_counts_and_output_shapes(preset, params):
    model = detector_from_preset(preset)
    assert sum(p.numel() for p in model.parameters()) == params
    out = model(torch.rand(2, 1, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, c, 16, 24) for k, c in HEADS.items()}


def test_bad_presets_and_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        detector_from_preset("tiyn")
    with pytest.raises(ConfigError, match="multiple of 16"):
        DetectorModule(preset="tiny", image_size=72)


# -- targets ---------------------------------------------------------------------------------------


def test_decode_of_encoded_boxes_recovers_the_boxes():
    boxes = random_boxes(25, 128)
    targets = encode_targets(boxes, 128, 128, stride=4, max_boxes=64)
    assert targets["heatmap"].shape == (1, 32, 32) and targets["n_boxes"] == 25
    assert targets["reg_mask"].sum() == 25  # no two centres share a cell in this draw
    found, scores = decode_maps(targets["heatmap"], targets["size"], targets["angle"], targets["offset"], 4)
    assert len(found) == 25 and np.all(scores == 1.0)
    iou = rotated_iou_matrix(found, boxes)
    assert np.all(iou.max(axis=1) > 0.999)
    assert sorted(iou.argmax(axis=1).tolist()) == list(range(25))
    assert np.array_equal(targets["boxes"][:25], boxes.astype(np.float32))


def test_size_and_angle_targets_cover_each_rod_and_go_to_the_highest_gaussian():
    # A horizontal rod centred in cell (y 8, x 8) and a vertical one in cell (11, 12), whose
    # Gaussians overlap at (8, 12): the vertical rod's is higher there (3 cells from its centre
    # along its length, against 4 for the horizontal one).
    boxes = np.array([[34.0, 34.0, 80.0, 4.0, 0.0], [50.0, 46.0, 80.0, 4.0, math.pi / 2]])
    t = encode_targets(boxes, 128, 128, stride=4)
    weight = t["reg_weight"][0]
    assert weight[8, 8] == 1.0 and weight[11, 12] == 1.0 and t["reg_mask"].sum() == 2
    along = weight[8, 3:14]  # the horizontal rod's axis, both sides of its centre
    assert np.all(along >= REG_MIN_WEIGHT) and along[0] < along[3] < along[5]
    assert weight[8, 15] == 0.0 and weight[2, 8] == 0.0  # off both rods' Gaussians
    horizontal = np.log([80.0, 4.0]), [1.0, 0.0]  # log sizes and (cos 2θ, sin 2θ)
    vertical = np.log([80.0, 4.0]), [-1.0, 0.0]
    for (y, x), (size, angle) in {(8, 11): horizontal, (8, 13): horizontal, (8, 12): vertical,
                                  (14, 12): vertical}.items():
        assert np.allclose(t["size"][:, y, x], size) and np.allclose(t["angle"][:, y, x], angle, atol=1e-6)
    assert np.all(t["offset"][:, weight < 1.0] == 0.0)  # the offset only at centres
    assert np.allclose(t["offset"][:, 8, 8], [0.5, 0.5]) and np.allclose(t["offset"][:, 11, 12], [0.5, 0.5])


def test_two_centres_in_one_cell_go_to_the_smaller_rod():
    t = encode_targets(np.array([[34.0, 34.0, 80.0, 4.0, 0.0], [34.5, 34.5, 20.0, 4.0, 1.0]]), 128, 128, stride=4)
    assert t["reg_mask"].sum() == 1 and t["reg_weight"][0, 8, 8] == 1.0
    assert np.exp(t["size"][0, 8, 8]) == pytest.approx(20.0)
    assert np.allclose(t["offset"][:, 8, 8], [0.625, 0.625])
    assert np.allclose(t["angle"][:, 8, 8], [math.cos(2.0), math.sin(2.0)], atol=1e-6)


def test_loss_weights_size_and_angle_by_the_gaussian_and_the_offset_at_centres():
    zeros = {k: torch.zeros(1, c, 4, 4) for k, c in (("size", 2), ("angle", 2), ("offset", 2))}
    batch = {**zeros, "heatmap": torch.zeros(1, 1, 4, 4), "reg_mask": torch.zeros(1, 1, 4, 4),
             **{k: torch.zeros(1, 1, 4, 4) for k in ("reg_weight", "end_distance", "end_mask")}}
    batch["reg_mask"][0, 0, 1, 1] = batch["reg_weight"][0, 0, 1, 1] = 1.0  # a centre
    batch["reg_weight"][0, 0, 1, 2] = 0.5  # along its rod
    out = {k: v.clone() for k, v in zeros.items()}
    out["heatmap"] = torch.full((1, 1, 4, 4), -9.0)
    out["end_distance"] = torch.zeros(1, 1, 4, 4)
    for name in ("size", "angle", "offset"):
        out[name][0, 0, 1, 2] = 3.0  # wrong only off the centre
    _, parts = detector_loss(out, batch)
    assert float(parts["size"]) == pytest.approx(0.5 * 3.0 / 1.5)
    assert float(parts["angle"]) == pytest.approx(0.5 * 3.0 / 1.5)
    assert float(parts["offset"]) == 0.0
    batch["end_mask"][0, 0, 1, 1:3] = 1.0
    out["end_distance"][0, 0, 1, 2] = 3.0
    out["end_distance"][0, 0, 2, 2] = 9.0  # off the rods: not counted
    assert float(detector_loss(out, batch)[1]["end_distance"]) == pytest.approx(3.0 / 2)


def test_end_distance_targets_run_along_the_rod_to_the_end_on_each_side():
    # A horizontal rod from x 14 to 94 at y 34: cell (8, 13)'s middle is its centre (54, 34).
    t = encode_targets(np.array([[54.0, 34.0, 80.0, 4.0, 0.0]]), 128, 128, stride=4)
    mask, distance = t["end_mask"][0], np.exp(t["end_distance"][0])
    # On the rod up to 0.4 x its length from the centre (x 22..86: cells 5..21), one cell wide.
    assert np.array_equal(np.flatnonzero(mask.any(axis=1)), [8])
    assert np.array_equal(np.flatnonzero(mask[8]), range(5, 22))
    assert distance[8, 13] == pytest.approx(40.0) and distance[8, 5] == pytest.approx(8.0)
    assert distance[8, 21] == pytest.approx(8.0) and distance[8, 17] == pytest.approx(40 - 16)


@pytest.mark.parametrize("error", [0.7, 1.3])
def test_probing_the_ends_measures_rods_whose_length_the_centre_misjudged(error):
    boxes = np.array([[150.0, 120.0, 160.0, 8.0, 0.3], [60.0, 60.0, 48.0, 6.0, -1.0], [40.0, 200.0, 24.0, 2.0, 1.2]])
    t = encode_targets(boxes, 256, 256, stride=4)
    size = t["size"].copy()
    size[0] += np.log(error)  # lengths regressed 30 % short or long
    found, _ = decode_maps(t["heatmap"], size, t["angle"], t["offset"], 4)
    order = np.argsort(-found[:, 2])
    assert np.allclose(found[order, 2], boxes[:, 2] * error, rtol=1e-4)
    found, _ = decode_maps(t["heatmap"], size, t["angle"], t["offset"], 4, end_distance=t["end_distance"])
    assert np.allclose(found[np.argsort(-found[:, 2])], boxes, rtol=1e-4, atol=1e-4)
    off, _ = decode_maps(t["heatmap"], size, t["angle"], t["offset"], 4, DecodeSettings(end_probe=0),
                         end_distance=t["end_distance"])
    assert np.allclose(np.sort(off[:, 2]), np.sort(boxes[:, 2] * error), rtol=1e-4)


def test_probing_keeps_the_regressed_half_where_the_map_cannot_tell():
    distance = np.zeros((16, 16), np.float32)  # every end 1 px beyond its cell's middle
    # Centre 2 px from the left border: the left probe point (x -4) is off the map and that half
    # keeps its 20 px; the right one (x 8) reads cell 2, whose middle is 8 px out: 8 + 1 px.
    boxes = np.array([[2.0, 32.0, 40.0, 4.0, 0.0], [32.0, 32.0, 12.0, 2.0, 0.0]])  # and a rod under 4 cells
    probed = probe_ends(boxes, distance, 4, 0.15)
    assert np.allclose(probed[0], [2.0 - 5.5, 32.0, 29.0, 4.0, 0.0]) and np.array_equal(probed[1], boxes[1])
    with pytest.raises(ConfigError, match="end_probe"):
        DecodeSettings(end_probe=0.4)  # past the band end distances are learnt in


def _draw(boxes, size):
    # OpenCV puts integer coordinates at pixel centres; boxes use pixel corners (centre = i + 0.5).
    canvas = np.zeros((size, size), np.uint8)
    for b in boxes:
        cv2.fillPoly(canvas, [np.round((box_corners(*b) - 0.5) * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
    return canvas


def test_augmentation_moves_boxes_with_the_image():
    boxes = random_boxes(6, 96, 3)
    image = _draw(boxes, 96).astype(np.float32) / 255
    geometric = Augmentation(brightness=0.0, contrast=0.0, blur_sigma=0.0)
    seen = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        out, moved = augment(image, boxes, rng, geometric)
        drawn = _draw(moved, 96) > 127
        pixels = out > 0.5
        assert (drawn & pixels).sum() / (drawn | pixels).sum() > 0.97
        assert np.all((moved[:, 4] >= -math.pi / 2) & (moved[:, 4] < math.pi / 2))
        seen.add(out.tobytes())
    assert len(seen) > 4  # flips and turns really vary


# -- training ----------------------------------------------------------------------------------------


def crystal_batches(n_batches, batch=4, seed=0, augmentation=False):
    config = {"crystal": SMALL_CRYSTALS, "tile": {"image_size": 64, "max_boxes": 32}}
    out = []
    for b in range(n_batches):
        arrays = render_crystal_tiles(config, seed, range(b * batch, (b + 1) * batch), augmentation=augmentation)
        out.append({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})
    return EpochBatches(lambda: iter(out), n_batches)


def test_rendered_rows_are_dense_and_deterministic():
    config = {"crystal": SMALL_CRYSTALS, "tile": {"image_size": 64, "max_boxes": 32}}
    a = render_crystal_tiles(config, 0, [3, 4], augmentation=True)
    b = render_crystal_tiles(config, 0, [3, 4], augmentation=True)
    assert a["image"].shape == (2, 1, 64, 64) and a["image"].dtype == np.float32
    assert a["heatmap"].shape == (2, 1, 16, 16) and a["boxes"].shape == (2, 32, 5)
    assert a["n_boxes"].dtype == np.int64 and a["n_boxes"].min() >= 1
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_windows_share_a_render_and_stay_pure_per_index():
    tile = {"image_size": 48, "max_boxes": 32, "windows_per_image": 3, "input_scale": 0.5}
    config = {"crystal": SMALL_CRYSTALS, "tile": tile}
    batch = render_crystal_tiles(config, 0, range(6))
    alone = render_crystal_tiles(config, 0, [4])
    for key in alone:
        if key != "index":
            assert np.array_equal(batch[key][4], alone[key][0]), key
    # 96 px renders halved to 48 px: every window is the whole image, so 3..5 show image 1
    assert np.array_equal(batch["image"][3], batch["image"][5])
    assert not np.array_equal(batch["image"][2], batch["image"][3])
    full = render_crystal_tiles({"crystal": SMALL_CRYSTALS, "tile": {"image_size": 96, "max_boxes": 32}}, 0, [1])
    n = int(full["n_boxes"][0])
    assert int(batch["n_boxes"][3]) == n
    np.testing.assert_allclose(batch["boxes"][3, :n, :4], full["boxes"][0, :n, :4] * 0.5, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(batch["boxes"][3, :n, 4], full["boxes"][0, :n, 4], atol=1e-6)


def test_detection_runs_at_the_recorded_scale_and_answers_in_input_pixels():
    torch.manual_seed(0)
    model = detector_from_preset("tiny").eval()
    image = render_crystal_tiles({"crystal": SMALL_CRYSTALS, "tile": {"image_size": 96}}, 0, [0])["image"][0, 0]
    halved, _ = rescale(image, np.zeros((0, 5)), 0.5)
    assert halved.shape == (48, 48)
    at_half = detect_image(model, image, scale=0.5)
    direct = detect_image(model, halved)
    assert len(at_half.boxes) == len(direct.boxes) > 0
    np.testing.assert_allclose(at_half.boxes, scale_boxes(direct.boxes, 2.0), rtol=1e-5)
    np.testing.assert_array_equal(at_half.scores, direct.scores)
    recorded = DetectorModule(preset="tiny", image_size=64, input_scale=0.5).export_preprocessing()
    assert recorded_scale(recorded) == 0.5 and recorded_scale({}) == 1.0
    with pytest.raises(ConfigError, match="scale"):
        detect_image(model, image, scale=0.0)
    with pytest.raises(ConfigError, match="input_scale"):
        DetectorModule(preset="tiny", image_size=64, input_scale=-1.0)


def test_validation_takes_whole_rendered_images():
    from microforge.trainers.detector.workload import CrystalsOptions, plan_crystals

    plan = plan_crystals(CrystalsOptions(val_samples=10, windows_per_image=4, train_samples=8))
    # samples 0..11 are images 0..2; training starts at 12, on image 3: no image in both splits
    assert plan.data.val_samples == 12
    assert plan_crystals(CrystalsOptions(val_samples=8, windows_per_image=4)).data.val_samples == 8


def test_validation_counts_rods_in_the_window_interior():
    grid = np.asarray(COUNT_SCORE_GRID)
    rod = [0.0, 0.0, 40.0, 4.0, 0.0]
    gt = np.array([[x, y, *rod[2:]] for x, y in [(60, 60), (100, 200), (200, 130), (10, 128), (128, 250)]])
    # the three interior rods found at 0.6, the two edge stubs (centres within 256 / 8 of an edge)
    # at 0.2, and one interior false positive at 0.3
    found = np.concatenate([gt, gt[:1] + [5, 50, 0, 0, 0]])
    scores = np.array([0.6, 0.6, 0.6, 0.2, 0.2, 0.3])
    errors = window_count_errors(found, scores, gt, (256, 256))
    assert errors[grid == 0.2][0] == pytest.approx(1 / 3)  # the stubs are in neither count
    assert errors[grid == 0.35][0] == 0.0 and errors[grid == 0.65][0] == 1.0
    assert grid[np.argmin(errors)] > 0.3  # the chosen score leaves the false positive out
    assert window_count_errors(found[:0], scores[:0], gt[:0], (256, 256)).max() == 0.0


def test_loss_falls_and_validation_logs_ap(tmp_path):
    import pytorch_lightning as pl

    torch.manual_seed(0)
    module = DetectorModule(preset="tiny", image_size=64, max_boxes=32, lr=5e-3, warmup_fraction=0.0)
    trainer = pl.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=tmp_path)
    train = crystal_batches(1)

    def loss():  # batch statistics (train mode), no update
        with torch.no_grad():
            return float(module.train()._loss(next(iter(train)))[1])

    first = loss()
    trainer.fit(module, train_dataloaders=train, val_dataloaders=crystal_batches(1, batch=2, seed=1))
    metrics = trainer.callback_metrics
    for name in ("val_ap50", "val_ap50_95", "val_count_error", "val_count_score", "val_loss", "train_loss",
                 "train_heatmap"):
        assert name in metrics and torch.isfinite(metrics[name]), name
    # the count threshold chosen on validation is the module's state and the artifact's record
    chosen = float(module.count_score)
    assert chosen in COUNT_SCORE_GRID and float(metrics["val_count_score"]) == pytest.approx(chosen)
    assert recorded_count_score(module.export_preprocessing()) == pytest.approx(chosen)
    assert "count_score" in module.state_dict()
    # a checkpoint from before the count score was chosen still loads, with the default
    older = {k: v for k, v in module.state_dict().items() if k != "count_score"}
    reloaded = DetectorModule(preset="tiny", image_size=64, max_boxes=32)
    reloaded.load_state_dict(older)
    assert float(reloaded.count_score) == COUNT_SCORE
    assert 0.0 <= float(metrics["val_ap50"]) <= 1.0
    assert loss() < 0.6 * first


def test_tiled_detection_covers_a_large_image_once():
    torch.manual_seed(0)
    model = detector_from_preset("tiny").eval()
    image = np.random.default_rng(0).integers(80, 110, (150, 230)).astype(np.uint8)
    whole = detect_image(model, image, tiling=TilingSettings(tile=256, overlap=0))
    tiled = detect_image(model, image, tiling=TilingSettings(tile=96, overlap=32))
    for found in (whole, tiled):
        assert found.boxes.shape[1] == 5 and len(found.boxes) == len(found.scores)
        assert np.all(found.boxes[:, 0] < 230) and np.all(found.boxes[:, 1] < 150)
    with pytest.raises(ConfigError, match="overlap"):
        TilingSettings(tile=64, overlap=40)
