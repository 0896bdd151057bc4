"""``microforge eval images`` end to end, and every bad input (one line, exit 2, nothing written)."""

import json

import numpy as np
import pytest
import tifffile

from microforge.evaluate.compare import measure_images
from microforge.evaluate.features import parse_feature_spec
from microforge.evaluate.images import find_images
from microforge.platform.cli import main


def test_eval_images_writes_report_grids_and_histograms(image_sets, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["eval", "images", str(image_sets["a"]), str(image_sets["other"]), "--out", str(out),
                 "--max-images", "12", "--kid-subsets", "10", "--kid-subset-size", "8"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["features"] == "texture" and report["real"]["images"] == 12
    assert report["frechet_distance"] > 0 and np.isfinite(report["kid_mean"]) and report["kid_std"] > 0
    assert report["kid_subset_size"] == 8
    for name in ("glcm_contrast", "gabor_energy", "edge_fraction", "object_count", "object_area", "patch_mean_cv"):
        assert report["statistic_distances"][name] >= 0
    import cv2

    for picture in ("samples.png", "histograms.png"):
        assert cv2.imread(str(out / picture)) is not None
    assert "Fréchet distance" in capsys.readouterr().out
    # a second run replaces the report directory
    assert main(["eval", "images", str(image_sets["a"]), str(image_sets["a"]), "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["frechet_distance"] == pytest.approx(0.0, abs=1e-6)


def test_eval_images_reads_a_microforge_dataset_directory(tmp_path, image_sets):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = find_images(image_sets["b"]).paths
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"kind": "test", "status": "complete"}))
    for f in files[:5]:
        (tmp_path / "ds" / f.name).write_bytes(f.read_bytes())
    pq.write_table(pa.table({"image": [f.name for f in files[:5]]}), tmp_path / "ds" / "manifest.parquet")
    assert len(find_images(tmp_path / "ds").paths) == 5
    assert main(["eval", "images", str(image_sets["a"]), str(tmp_path / "ds"), "--out", str(tmp_path / "r")]) == 0


def test_ray_data_path_matches_the_in_process_loop(ray_local, image_sets):
    paths = list(find_images(image_sets["a"], max_images=6).paths)
    spec = parse_feature_spec("texture")
    local, distributed = measure_images(paths, spec, workers=0), measure_images(paths, spec, workers=2)
    for key in ("features", "glcm_contrast", "object_areas", "intensity_hist"):
        np.testing.assert_array_equal(local[key], distributed[key])


def _rgb_set(directory):
    directory.mkdir()
    for i in range(3):
        tifffile.imwrite(directory / f"{i}.tif", np.full((32, 32, 3), 1000 * i, np.uint16))
    return directory


@pytest.mark.parametrize("case", ["channels", "empty", "weights", "unknown", "missing", "out_taken"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, image_sets, tmp_path, capsys):
    real, fake, extra = str(image_sets["a"]), str(image_sets["b"]), []
    if case == "channels":
        fake = str(_rgb_set(tmp_path / "rgb"))
    elif case == "empty":
        (tmp_path / "empty" / "nested").mkdir(parents=True)
        fake = str(tmp_path / "empty")
    elif case == "weights":
        (tmp_path / "w.pth").write_bytes(b"\x00garbage")
        extra = ["--features", f"inception:{tmp_path / 'w.pth'}"]
    elif case == "unknown":
        extra = ["--features", "inceptoin:x.pth"]
    elif case == "missing":
        fake = str(tmp_path / "nowhere")
    out = tmp_path / "out"
    if case == "out_taken":
        out.mkdir()
        (out / "precious.txt").write_text("keep")
    code = main(["eval", "images", real, fake, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("microforge: error: ") and err.count("\n") == 1, err
    expected = {"channels": "channel", "empty": "no images", "weights": "cannot read Inception weights",
                "unknown": "did you mean 'inception'", "missing": "not a directory", "out_taken": "not an"}[case]
    assert expected in err
    if case == "out_taken":
        assert [p.name for p in out.iterdir()] == ["precious.txt"]
    else:
        assert not out.exists()
