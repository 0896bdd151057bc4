"""``eval crystals``: the metric separates good from bad detections; a 2-worker training run on
rendered crystals, its artifact scored end to end; bad input is one line, exit 2, nothing written."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch

from microforge.datasets.crystals.dataset import generate_dataset
from microforge.evaluate.detector import score_detections
from microforge.platform.cli import main
from microforge.trainers import load_artifact, read_run

SMALL_CRYSTALS = {"width": 96, "height": 96, "n_rods_rng_lo_hi": [4, 10], "rod_len_px_lo_hi": [16, 48],
                  "scalebar_enable": False}


def rods(n, seed):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(20, 300, n), rng.uniform(20, 300, n), rng.uniform(30, 120, n),
                     rng.uniform(3, 10, n), rng.uniform(-math.pi / 2, math.pi / 2, n)], axis=1)


def test_ground_truth_scores_one_and_perturbed_boxes_score_lower():
    gts = [rods(12, s) for s in range(5)]
    perfect = score_detections([(g, np.ones(len(g))) for g in gts], gts)
    assert perfect.report["ap50"] == pytest.approx(1.0) and perfect.report["ap50_95"] == pytest.approx(1.0)
    assert perfect.report["count_error"] == 0.0 and perfect.report["length_error"] == 0.0

    def shifted(g, dx):
        out = g.copy()
        out[:, 0] += dx
        return out

    def turned(g, da):
        out = g.copy()
        out[:, 4] += da
        return out

    small = score_detections([(shifted(g, 1.0), np.ones(len(g))) for g in gts], gts).report
    large = score_detections([(shifted(g, 4.0), np.ones(len(g))) for g in gts], gts).report
    rotated = score_detections([(turned(g, 0.3), np.ones(len(g))) for g in gts], gts).report
    assert small["ap50_95"] < 1.0 and large["ap50_95"] < small["ap50_95"]
    assert rotated["ap50"] < 0.5  # thin rods turned by 17 degrees barely overlap
    # half the rods missed plus as many false alarms ranked first: AP well under 1
    noise = [rods(6, 100 + s) for s in range(5)]
    mixed = [(np.concatenate([n, g[:6]]), np.concatenate([np.full(6, 0.9), np.full(6, 0.5)]))
             for n, g in zip(noise, gts)]
    report = score_detections(mixed, gts).report
    assert report["ap50"] < 0.3 and report["count_error"] == pytest.approx(0.0)
    longer = [(g * [1, 1, 1.1, 1, 1], np.ones(len(g))) for g in gts]
    assert score_detections(longer, gts).report["length_error"] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    """One 2-worker epoch of the tiny detector on crystals rendered per epoch, through the CLI."""
    root = tmp_path_factory.mktemp("crystals")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "crystals", "--preset", "tiny", "--size", "64", "--train-samples", "8",
                     "--val-samples", "4", "--batch-size", "2", "--epochs", "1", "--workers", "2",
                     "--crystal-options", json.dumps(SMALL_CRYSTALS), "--name", "t", "--out", str(root / "runs")])
    assert code == 0, out.getvalue()
    data = root / "data"
    generate_dataset(SMALL_CRYSTALS, 4, data, seed=5, split=(0.5, 0.0, 0.5))
    return root, root / "runs" / "t", out.getvalue()


def test_two_worker_training_writes_a_detect_artifact(trained):
    _, run_dir, printed = trained
    assert f"artifact: {run_dir / 'model'}" in printed and "val_ap50" in printed
    record = read_run(run_dir)
    assert record["status"] == "finished" and record["scaling"]["num_workers"] == 2
    artifact = load_artifact(run_dir / "model")
    assert artifact.task == "detect" and artifact.workload == "crystals"
    assert 0.0 <= artifact.metrics["val_ap50"] <= 1.0
    out = artifact["model"](torch.rand(1, 1, 64, 64))
    assert out["heatmap"].shape == (1, 1, 16, 16)


def test_eval_crystals_writes_report_table_and_pictures(trained):
    root, run_dir, _ = trained
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["eval", "crystals", "--model", str(run_dir / "model"), "--data", str(root / "data"),
                     "--out", str(root / "eval")])
    assert code == 0
    report = json.loads((root / "eval" / "report.json").read_text())
    for key in ("ap50", "ap50_95", "count_error", "length_error", "width_error"):
        assert key in report
    assert 0.0 <= report["ap50"] <= 1.0 and report["split"] == "test" and report["images"] >= 1
    assert len(report["per_image"]) == report["images"]
    # counted at the score the training run chose on its validation windows and recorded
    recorded = json.loads((run_dir / "model" / "model.json").read_text())["preprocessing"]
    assert report["count_score"] == recorded["count_score"] and recorded["input_scale"] == 0.5
    table = (root / "eval" / "per_image.csv").read_text().splitlines()
    assert table[0].startswith("image,rods,found,count_error") and len(table) == report["images"] + 1
    for name in ("pr_curve.png", "overlays.png"):
        assert (root / "eval" / name).read_bytes()[:4] == b"\x89PNG"
    assert "AP50" in out.getvalue()


def test_bad_input_is_one_line_exit_2_and_writes_nothing(trained, tmp_path, capsys):
    root, run_dir, _ = trained
    (tmp_path / "empty").mkdir()
    cases = [
        ["eval", "crystals", "--model", str(run_dir / "model"), "--data", str(tmp_path / "empty"),
         "--out", str(tmp_path / "a")],
        ["eval", "crystals", "--model", str(tmp_path / "empty"), "--data", str(root / "data"),
         "--out", str(tmp_path / "b")],
        ["eval", "crystals", "--model", str(run_dir / "model"), "--data", str(root / "data"), "--count-score", "2",
         "--out", str(tmp_path / "c")],
        ["train", "crystals", "--synth", "blobs", "--out", str(tmp_path / "d")],
        ["train", "crystals", "--synth", "crystals:defualt", "--out", str(tmp_path / "e")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
    assert "did you mean 'default'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
