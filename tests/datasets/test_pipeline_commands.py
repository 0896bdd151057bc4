"""The 16-bit pipeline end to end through the CLI: prepare, enhance, fix, analyze, split."""

import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
from skimage import exposure

from microforge.datasets.pipeline.enhance import adaptive_gamma
from microforge.datasets.manifest import decode_image, manifest_dataset, read_manifest
from microforge.platform.cli import main
from microforge.platform.transforms import Transform

GRAY = ("a/img0.tif", "a/img1.tif", "b/nested/img2.tif", "b/img3.png")


def sparse_16bit(rng, shape):
    """A dark background with a few bright spots, like a CARS image."""
    image = rng.gamma(2.0, 300.0, shape)
    ys, xs = rng.integers(0, shape[0], 6), rng.integers(0, shape[1], 6)
    image[ys, xs] = rng.uniform(20000, 60000, 6)
    return np.clip(image, 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("raw")
    images = {rel: sparse_16bit(rng, (48, 64) if i == 0 else (32, 40)) for i, rel in enumerate(GRAY[:3])}
    images["b/img3.png"] = rng.integers(10, 200, (40, 32), dtype=np.uint8)
    images["c/multi.tif"] = np.stack([sparse_16bit(rng, (32, 32)) for _ in range(3)])
    images["c/rgb.tif"] = rng.integers(0, 4000, (32, 32, 3), dtype=np.uint16)
    for rel, image in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".png"):
            assert cv2.imwrite(str(root / rel), image)
        else:
            tifffile.imwrite(root / rel, image, photometric="rgb" if "rgb" in rel else "minisblack")
    (root / "c/corrupt.tif").write_bytes(b"II*\x00" + b"not a tiff" * 8)
    (root / "notes.txt").write_text("not an image")
    return root, images


def run(*argv):
    return main(["data", *map(str, argv)])


def rows_of(path):
    return read_manifest(path).to_pylist()


def files_of(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(ray_local, sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "ds"
    assert run("prepare", sources[0], out, "--workers", 1) == 0
    return out


def test_prepare_matches_the_percentile_transform_on_every_kind_of_source(prepared, sources):
    _, images = sources
    rows = rows_of(prepared)
    assert [r["source"] for r in rows] == sorted([*images, "c/corrupt.tif"])  # sorted relative paths
    by_source = {r["source"]: r for r in rows}
    transform = Transform("percentile", {"p_lo": 5.0, "p_hi": 95.0})
    for rel in GRAY:
        row = by_source[rel]
        out = decode_image(prepared / row["image"])
        assert out.dtype == np.uint16 and out.min() == 0 and out.max() == 65535  # 16-bit uses the range
        assert np.array_equal(out, transform.invert(transform.apply(images[rel]), np.uint16))
        assert (row["clip_low"], row["clip_high"]) == tuple(np.percentile(images[rel].astype(np.float32), [5, 95]))
        assert row["source_dtype"] == str(images[rel].dtype) and row["error"] is None
        assert (row["height"], row["width"]) == images[rel].shape and 0 <= row["sparsity"] < 0.05
    multi = by_source["c/multi.tif"]
    assert multi["source_pages"] == 3 and np.array_equal(
        decode_image(prepared / multi["image"]), transform.invert(transform.apply(images["c/multi.tif"][0]), np.uint16))
    assert by_source["c/rgb.tif"]["source_channels"] == 3 and by_source["c/rgb.tif"]["image"]
    bad = by_source["c/corrupt.tif"]
    assert bad["image"] is None and "cannot be decoded" in bad["error"] and bad["split"] == "error"
    # Every column reads (``source`` stays a path, outside the dataset); the unreadable row is in no split.
    train = manifest_dataset(prepared, "train").take_all()
    assert len(train) == 6 and all(r["image"].dtype == np.uint16 for r in train)
    assert {r["source"] for r in train} <= set(by_source)


def test_prepare_is_byte_identical_with_3_workers_and_resumes_a_deleted_output(prepared, sources, tmp_path, capsys):
    out = tmp_path / "ds3"
    assert run("prepare", sources[0], out, "--workers", 3) == 0
    assert "unreadable: 1" in capsys.readouterr().out
    assert files_of(out) == files_of(prepared)
    (out / "images/0000002.tif").unlink()
    assert run("prepare", sources[0], out, "--workers", 3) == 0
    assert "(1 prepared, 6 already complete)" in capsys.readouterr().out
    assert files_of(out) == files_of(prepared)


def test_prepare_options_log_page_bits_and_denoise(ray_local, sources, tmp_path):
    root, images = sources
    out = tmp_path / "opts"
    assert run("prepare", root, out, "--log", "--bits", 8, "--page", 1, "--p-low", 1, "--p-high", 99,
               "--denoise", "median") == 0
    by_source = {r["source"]: r for r in rows_of(out)}
    multi = decode_image(out / by_source["c/multi.tif"]["image"])
    unit = Transform("percentile", {"p_lo": 1.0, "p_hi": 99.0, "log1p": True}).apply(images["c/multi.tif"][1])
    assert multi.dtype == np.uint8 and np.array_equal(multi, Transform("unit_range").invert(cv2.medianBlur(unit, 3)))
    assert "page 1" in by_source["a/img0.tif"]["error"]  # a single-page file has no page 1


def test_enhance_keeps_the_bit_depth_and_records_its_source(prepared, tmp_path):
    out = tmp_path / "clahe"
    assert run("enhance", prepared, out, "--op", "clahe", "--clip-limit", 0.02) == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["kind"] == "enhance" and info["source_dataset"]["path"] == str(prepared)
    assert info["config"]["op_params"]["clip_limit"] == 0.02
    row = rows_of(out)[0]
    source = decode_image(prepared / row["image"])
    expected = exposure.equalize_adapthist(source / 65535.0, clip_limit=0.02, nbins=256)
    assert np.array_equal(decode_image(out / row["image"]), np.round(np.clip(expected, 0, 1) * 65535).astype(np.uint16))
    assert [r["split"] for r in rows_of(out)] == [r["split"] for r in rows_of(prepared)]
    x = np.random.default_rng(1).random((16, 16)) ** 3
    assert np.mean(x ** adaptive_gamma(x, 0.3)) == pytest.approx(0.3, abs=1e-6)


def test_fix_restretches_only_dark_images(ray_local, tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "dark"
    images = {"images/0.tif": rng.integers(0, 3000, (32, 32), dtype=np.uint16),
              "images/1.tif": rng.integers(0, 60000, (32, 32), dtype=np.uint16)}
    for rel, image in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / rel, image)
    (root / "dataset.json").write_text(json.dumps({"kind": "hand", "status": "complete"}))
    pq.write_table(pa.Table.from_pylist([{"image": rel} for rel in images]), root / "manifest.parquet")
    out = tmp_path / "fixed"
    assert run("fix", root, out) == 0
    rows = rows_of(out)
    assert [r["fixed"] for r in rows] == [True, False]
    fixed = decode_image(out / "images/0.tif")
    assert fixed.dtype == np.uint16 and fixed.max() == 65535
    assert (out / "images/1.tif").read_bytes() == (root / "images/1.tif").read_bytes()


def test_analyze_writes_stats_plots_and_html(prepared, sources, tmp_path):
    report = tmp_path / "report"
    assert run("analyze", prepared, "--out", report) == 0
    stats = json.loads((report / "stats.json").read_text())
    assert stats["images"] == 6 and not stats["errors"]
    first = stats["per_image"][0]
    image = decode_image(prepared / first["image"]) / 65535.0
    assert first["mean"] == pytest.approx(image.mean()) and first["std"] == pytest.approx(image.std())
    assert set(stats["aggregate"]) >= {"skew", "kurtosis", "sharpness", "noise", "fft_ratio", "sparsity"}
    html = (report / "report.html").read_text()
    for name in ("histogram", "sparsity", "sharpness_noise", "samples"):
        assert f"plots/{name}.png" in html and cv2.imread(str(report / "plots" / f"{name}.png")) is not None
    raw = tmp_path / "raw-report"  # a plain folder of images works too; the corrupt file is listed
    assert run("analyze", sources[0], "--out", raw) == 0
    assert [e["image"] for e in json.loads((raw / "stats.json").read_text())["errors"]] == ["c/corrupt.tif"]


@pytest.fixture(scope="module")
def patients(ray_local, tmp_path_factory):
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("patients")
    for p in range(8):
        for s in range(1 + p % 3):
            path = root / f"patient_{p}" / f"slide_{s}" / f"p{p}_s{s}.tif"
            path.parent.mkdir(parents=True)
            tifffile.imwrite(path, rng.integers(0, 5000, (16, 16), dtype=np.uint16))
    out = tmp_path_factory.mktemp("patients-prep") / "ds"
    assert run("prepare", root, out, "--bits", "float", "--denoise", "nlm") == 0
    image = decode_image(out / rows_of(out)[0]["image"])
    assert image.dtype == np.float32 and 0 <= image.min() < image.max() <= 1
    return out


@pytest.mark.parametrize("group_by, group_of", [
    ("parent", lambda source: source.rsplit("/", 1)[0]),
    (r"patient_(\d+)/", lambda source: source.split("/")[0]),
])
def test_grouped_split_has_no_leakage_and_is_deterministic(patients, group_by, group_of):
    assert run("split", patients, "--ratios", "0.6,0.2,0.2", "--seed", 7, "--group-by", group_by) == 0
    manifest = (patients / "manifest.parquet").read_bytes()
    rows = rows_of(patients)
    splits_of_group = {}
    for row in rows:
        splits_of_group.setdefault(group_of(row["source"]), set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of_group.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    read = {split: [r["index"] for r in manifest_dataset(patients, split, columns=["index"]).take_all()]
            for split in ("train", "val", "test")}
    assert sorted(sum(read.values(), [])) == [r["index"] for r in rows]
    assert all(rows[i]["split"] == split for split, indexes in read.items() for i in indexes)
    assert run("split", patients, "--ratios", "0.6,0.2,0.2", "--seed", 7, "--group-by", group_by) == 0
    assert (patients / "manifest.parquet").read_bytes() == manifest


@pytest.mark.parametrize("argv", [
    ["prepare", "{empty}", "{out}"],
    ["prepare", "{src}", "{out}", "--p-low", 95, "--p-high", 5],
    ["enhance", "{ds}", "{out}", "--op", "gamma", "--gamma", -1],
    ["split", "{ds}", "--ratios", "0.5,0.3,0.1"],
    ["split", "{ds}", "--group-by", r"patient_\d+"],
])
def test_bad_input_exits_2_and_writes_nothing(ray_local, patients, sources, tmp_path, capsys, argv):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    names = {"{empty}": tmp_path / "empty", "{src}": sources[0], "{ds}": patients, "{out}": tmp_path / "out"}
    before = files_of(patients)
    assert run(*[names.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("microforge: error: ")
    assert not (tmp_path / "out").exists() and files_of(patients) == before
