"""Delineation trained from a dataset directory through the manifest reader (16-bit images)."""

import json

import numpy as np
import pytest
import pyarrow as pa
import pyarrow.parquet as pq
import tifffile
import cv2

from microforge.datasets.blobs import render_blob_batch
from microforge.platform.cli import main
from microforge.trainers import read_run


def write_blob_dataset(root, n_train=8, n_val=4, size=32):
    """Blob renders stored as a user's data would be: 16-bit TIFF images, 0/255 PNG masks."""
    blobs = render_blob_batch({"size": size}, 7, range(n_train + n_val))
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n_train + n_val):
        tifffile.imwrite(root / "images" / f"{i}.tif", np.round(blobs["image"][i, 0] * 65535).astype(np.uint16))
        cv2.imwrite(str(root / "masks" / f"{i}.png"), (blobs["mask"][i, 0] > 0).astype(np.uint8) * 255)
        rows.append({"index": i, "image": f"images/{i}.tif", "mask": f"masks/{i}.png",
                     "split": "train" if i < n_train else "val"})
    (root / "dataset.json").write_text(json.dumps({"kind": "blobs", "status": "complete"}))
    pq.write_table(pa.Table.from_pylist(rows), root / "manifest.parquet")
    return root


@pytest.mark.slow  # the manifest reader's training path runs by default in DDPM's --data test
def test_delineation_trains_on_a_dataset_directory(ray_local, tmp_path, capsys):
    data = write_blob_dataset(tmp_path / "blobs16")
    runs = tmp_path / "runs"
    assert main(["train", "delineation", "--data", str(data), "--size", "32", "--epochs", "2", "--batch-size", "4",
                 "--out", str(runs), "--name", "d"]) == 0
    record = read_run(runs / "d")
    assert record["data_class"] == "microforge.trainers.manifest_data:ManifestData"
    assert record["data"]["dataset_dir"] == str(data.absolute()) and record["epochs_completed"] == 2
    best = record["best_metrics"]
    assert record["monitor"] == "val_dice" and 0.0 <= best["val_dice"] <= 1.0
    assert "val_clean_dice" not in best  # a dataset has no noise-free twin of its images
    assert main(["train", "delineation", "--data", str(tmp_path / "none"), "--out", str(runs)]) == 2
    assert "does not exist" in capsys.readouterr().err
