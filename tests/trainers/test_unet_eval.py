"""``eval unet``: input checks, SNR binning, the report and pictures, and bad artifacts."""

import json

import cv2
import numpy as np
import pytest
import torch

from microforge.platform.artifact import ArtifactError, ComponentWeights, save_artifact
from microforge.platform.cli import main
from microforge.platform.errors import MicroforgeError
from microforge.trainers import get_workload, load_artifact, load_model
from microforge.trainers.export import export_artifact
from microforge.trainers.unet.evaluate import predict_masks, summarise_by_snr
from microforge.trainers.unet.lightning import UNetModule


@pytest.fixture()
def artifact(tmp_path):
    """An untrained tiny U-Net exported the way the launcher exports one."""
    torch.manual_seed(0)
    module = UNetModule(preset="tiny", image_size=32)
    path = export_artifact(module, tmp_path / "model", workload=get_workload("delineation"),
                           metrics={"val_dice": 0.5}, provenance={"data": {"seed": 0}})
    return path, module.model


def test_load_model_gives_identical_outputs(artifact):
    path, model = artifact
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), model.eval()(x))


def test_predict_masks_takes_every_dtype_through_the_artifacts_transform(artifact):
    loaded = load_artifact(artifact[0])
    image16 = np.random.default_rng(0).integers(0, 65536, (32, 32)).astype(np.uint16)
    masks = predict_masks(loaded, image16)
    assert masks.shape == (1, 1, 32, 32) and masks.dtype == np.uint8
    # uint16 is divided by 65535 (the recorded unit_range), exactly as a float image in [0, 1]
    as_float = (image16.astype(np.float32) / 65535.0)[None, None]
    assert np.array_equal(predict_masks(loaded, as_float), masks)
    assert predict_masks(loaded, np.zeros((2, 36, 40), np.uint8)).shape == (2, 1, 36, 40)  # padded, cropped
    for bad, message in [
        (np.zeros((1, 3, 32, 32), np.float32), "got shape"),
        (np.zeros((32, 32), np.int32), "uint8 or uint16"),
        (np.full((32, 32), 2.0, np.float32), r"in \[0, 1\]"),
    ]:
        with pytest.raises(MicroforgeError, match=message):
            predict_masks(loaded, bad)


def test_summarise_by_snr_bins_half_open_intervals():
    snr = np.array([-7.0, -5.0, 3.0, 4.9, 25.0])
    rows = summarise_by_snr(snr, {"dice": np.array([0.1, 0.2, 0.3, 0.5, 0.9])}, edges=(-5.0, 5.0))
    assert [(r["bin"], r["n"]) for r in rows] == [("< -5", 1), ("-5 to 5", 3), (">= 5", 1)]
    assert rows[1]["dice"] == pytest.approx(1 / 3)
    empty = summarise_by_snr(snr[:1], {"dice": np.array([0.1])}, edges=(0.0,))
    assert empty[1] == {"bin": ">= 0", "lo_db": 0.0, "hi_db": None, "n": 0, "dice": None}


def test_eval_writes_report_and_pictures(ray_local, artifact, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["eval", "unet", "--model", str(artifact[0]), "--samples", "24", "--batch-size", "8",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SNR bin (dB)" in printed and "\nall " in printed
    report = json.loads((out / "report.json").read_text())
    assert report["samples"] == 24 and report["size"] == 32
    assert sum(row["n"] for row in report["snr_bins"]) == 24
    assert set(report["overall"]) == {"dice", "iou", "hd95", "boundary_f1", "clean_dice"}
    assert len(report["per_sample"]) == 24
    assert len({s["index"] for s in report["per_sample"]}) == 24
    for name in ("dice_vs_snr.png", "overlays.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 100 and image.std() > 0


def test_eval_rejects_sizes_the_model_cannot_take(artifact, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["eval", "unet", "--model", str(artifact[0]), "--size", "36", "--out", str(out)]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert not out.exists()


def test_eval_of_missing_or_corrupt_artifacts_exits_2(artifact, tmp_path, capsys):
    path, _ = artifact
    out = tmp_path / "report"
    assert main(["eval", "unet", "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert main(["eval", "unet", "--model", str(path), "--out", str(out)]) == 2
    assert "corrupt" in capsys.readouterr().err
    (path / "model.json").unlink()
    assert main(["eval", "unet", "--model", str(path), "--out", str(out)]) == 2
    assert "model.json is missing" in capsys.readouterr().err
    assert not out.exists()


def test_eval_refuses_a_model_that_is_not_a_unet(tmp_path, capsys):
    lin = torch.nn.Linear(2, 2)
    path = save_artifact(tmp_path / "other", {"generator": ComponentWeights(
        "torch.nn:Linear", {"in_features": 2, "out_features": 2}, lin.state_dict())}, workload="fastgan",
        task="generate", transform=None, preprocessing={}, metrics={}, provenance={})
    assert main(["eval", "delineation", "--model", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "not a segmentation model" in capsys.readouterr().err
    (path / "model.json").write_text((path / "model.json").read_text().replace("torch.nn:Linear", "fastgan"))
    with pytest.raises(ArtifactError, match="unknown model class 'fastgan'"):
        load_model(path)
