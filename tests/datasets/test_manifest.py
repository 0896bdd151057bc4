"""The manifest reader and ManifestData on tiny datasets, written by the generator and by hand."""

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile

from microforge.datasets.crystals import CrystalConfig, generate_dataset, load_preset, render_crystal
from microforge.datasets.manifest import decode_image, manifest_dataset, manifest_splits, read_manifest
from microforge.platform.cli import main
from microforge.platform.errors import ConfigError, DatasetError
from microforge.trainers.manifest_data import ManifestData

SMALL = {"width": 96, "height": 64, "n_rods_rng_lo_hi": [2, 4], "rod_len_px_lo_hi": [10, 30]}
SPLITS = ["train", "val", "train", "test", "train", "val"]


def write_dataset(root: Path, rows: list[dict], files: dict[str, np.ndarray | str]) -> Path:
    """A hand-made dataset: ``files`` by relative path (arrays as TIFF or PNG, strings as text)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        elif path.suffix == ".tif":
            tifffile.imwrite(path, content)
        else:
            assert cv2.imwrite(str(path), content)
    (root / "dataset.json").write_text(json.dumps({"kind": "hand", "status": "complete"}))
    pq.write_table(pa.Table.from_pylist(rows), root / "manifest.parquet")
    return root


@pytest.fixture(scope="module")
def png_dataset(tmp_path_factory):
    """8-bit PNG images with masks and label files, and a split column."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("png")
    rows, files = [], {}
    for i, split in enumerate(SPLITS):
        files[f"images/{i}.png"] = rng.integers(0, 256, (12, 16), dtype=np.uint8)
        files[f"masks/{i}.png"] = (rng.random((12, 16)) > 0.5).astype(np.uint8)
        files[f"labels/{i}.txt"] = f"0 0.5 0.5 0.1 0.{i}\n"
        rows.append({"index": 10 + i, "split": split, "image": f"images/{i}.png", "mask": f"masks/{i}.png",
                     "path_labels": f"labels/{i}.txt", "snr_db": float(i)})
    return write_dataset(root, rows, files), files


@pytest.fixture(scope="module")
def tif_dataset(tmp_path_factory):
    """16-bit TIFF images (values beyond 8 bits, one of another size) and no split column."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("tif")
    files = {f"img/{i}.tif": rng.integers(0, 65536, (10, 14 - (i == 1)), dtype=np.uint16) for i in range(5)}
    return write_dataset(root, [{"image": rel} for rel in files], files), files


def test_pngs_with_masks_and_labels_decode_in_manifest_order(ray_local, png_dataset):
    root, files = png_dataset
    assert manifest_splits(root) == {"train": 3, "val": 2, "test": 1}
    rows = manifest_dataset(root, "train", rows_per_task=1).take_all()
    assert [r["index"] for r in rows] == [10, 12, 14]
    for row in rows:
        i = row["index"] - 10
        assert row["split"] == "train" and row["snr_db"] == float(i)
        assert row["image"].dtype == np.uint8 and np.array_equal(row["image"], files[f"images/{i}.png"])
        assert row["mask"].dtype == np.uint8 and np.array_equal(row["mask"], files[f"masks/{i}.png"])
        assert row["path_labels"] == files[f"labels/{i}.txt"]
    val = manifest_dataset(root, "val", columns=["image", "index"]).take_all()
    assert [sorted(r) for r in val] == [["image", "index"]] * 2 and [r["index"] for r in val] == [11, 15]


def test_16_bit_tiffs_keep_their_dtype_and_a_manifest_without_splits_is_all_train(ray_local, tif_dataset):
    root, files = tif_dataset
    assert manifest_splits(root) == {"train": 5}
    rows = manifest_dataset(root, "train", rows_per_task=2).take_all()
    assert [r["index"] for r in rows] == list(range(5))
    for row, expected in zip(rows, files.values()):
        assert row["image"].dtype == np.uint16 and np.array_equal(row["image"], expected)
        assert row["split"] == "train"
    scaled = manifest_dataset(root, "train", columns=["image"], transform="unit_range").take(1)[0]["image"]
    assert scaled.dtype == np.float32 and np.allclose(scaled, list(files.values())[0] / 65535.0)


def test_generated_crystal_dataset_reads_back_its_rendered_pixels(ray_local, tmp_path):
    config = CrystalConfig.load({**load_preset("default").to_json_dict(), **SMALL})
    out = tmp_path / "crystals"
    generate_dataset(config, 4, out, seed=5, split=(0.5, 0.5, 0.0), workers=2)
    table = read_manifest(out)
    counts = manifest_splits(out)
    assert sum(counts.values()) == 4 and set(counts) <= {"train", "val"}
    for split in counts:
        rows = manifest_dataset(out, split).take_all()
        expected = [r["index"] for r in table.to_pylist() if r["split"] == split]
        assert [r["index"] for r in rows] == expected
        for row in rows:
            image = render_crystal(config, 5, row["index"]).image
            assert row["image"].dtype == np.uint8 and np.array_equal(row["image"], image)
            assert row["path_labels_dota"] == (out / f"labels_dota/{row['index']:07d}.txt").read_text()


def test_colour_images_decode_to_the_same_bgr_array_from_png_and_tiff(tmp_path):
    bgr = np.random.default_rng(2).integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "a.png"), bgr)
    tifffile.imwrite(tmp_path / "a.tif", bgr[..., ::-1], photometric="rgb")  # TIFF stores RGB
    assert np.array_equal(decode_image(tmp_path / "a.png"), bgr)
    assert np.array_equal(decode_image(tmp_path / "a.tif"), bgr)


def test_manifest_data_is_static_describes_itself_and_counts_rows(ray_local, png_dataset, tmp_path, monkeypatch):
    root, files = png_dataset
    monkeypatch.chdir(root.parent)
    data = ManifestData(root.name, transform={"name": "unit_range"})
    assert ManifestData(**json.loads(json.dumps(data.describe()))) == data
    assert data.describe()["dataset_dir"] == str(root) and data.describe()["columns"] is None
    assert data.epoch_splits() == () and data.read_columns() == ("image", "mask", "index")
    assert data.rows_per_worker("train", 2) == 1 and data.rows_per_worker("val", 1) == 2
    assert data.rows_per_worker("test", 1) is None
    datasets = data.driver_datasets()
    assert sorted(datasets) == ["train", "val"]
    batch = next(iter(datasets["val"].iter_torch_batches(batch_size=2)))
    assert batch["index"].tolist() == [11, 15] and batch["mask"].dtype.is_floating_point is False
    assert np.allclose(batch["image"][0].numpy(), files["images/1.png"] / 255.0)

    custom = ManifestData(str(root), columns=["image", "snr_db"], val_split=None)
    assert ManifestData(**custom.describe()) == custom and list(custom.driver_datasets()) == ["train"]
    assert custom.rows_per_worker("val", 1) is None


def test_manifest_data_refuses_text_columns_and_missing_splits(png_dataset, tif_dataset):
    with pytest.raises(ConfigError, match="'path_labels' cannot become a training tensor"):
        ManifestData(str(png_dataset[0]), columns=["image", "path_labels"])
    with pytest.raises(DatasetError, match="no split 'holdout'.*train, val, test"):
        ManifestData(str(png_dataset[0]), val_split="holdout")
    assert ManifestData(str(tif_dataset[0])).splits() == {"train": "train"}  # no val: none, silently


def test_bad_datasets_are_refused_with_clear_errors(ray_local, png_dataset, tmp_path):
    root, _ = png_dataset
    with pytest.raises(DatasetError, match=r"no split 'tset' \(did you mean 'test'\?\); its splits: train, val, test"):
        manifest_dataset(root, "tset")
    with pytest.raises(DatasetError, match="no column 'masks'"):
        manifest_dataset(root, "train", columns=["masks"])
    with pytest.raises(DatasetError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset.json"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "empty" / "dataset.json").write_text("{}")
    with pytest.raises(DatasetError, match="no manifest.parquet"):
        read_manifest(tmp_path / "empty")
    incomplete = write_dataset(tmp_path / "incomplete", [{"image": "a.png"}], {})
    (incomplete / "dataset.json").write_text(json.dumps({"status": "incomplete"}))
    with pytest.raises(DatasetError, match="incomplete dataset"):
        read_manifest(incomplete)
    for name, path in (("up", "../outside.png"), ("abs", str(tmp_path / "outside.png"))):
        escaping = write_dataset(tmp_path / name, [{"image": "ok.png"}, {"image": path}],
                                 {"ok.png": np.zeros((2, 2), np.uint8)})
        with pytest.raises(DatasetError, match="outside the dataset directory"):
            manifest_dataset(escaping, "train")


def test_data_info_prints_splits_and_columns(png_dataset, capsys):
    assert main(["data", "info", str(png_dataset[0])]) == 0
    out = capsys.readouterr().out
    assert "splits: train 3, val 2, test 1" in out
    assert "image (image), mask (image), path_labels (text), snr_db (value)" in out
