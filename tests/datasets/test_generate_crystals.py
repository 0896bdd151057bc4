"""Sharded crystal dataset generation on the session's local Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from microforge.datasets.crystals import CrystalConfig, generate_dataset, load_preset
from microforge.datasets.labels import parse_dota, parse_ultralytics_obb, parse_yolo_obb
from microforge.datasets.manifest import read_manifest
from microforge.platform.cli import main
from microforge.platform.errors import DatasetError

SMALL = {"width": 192, "height": 144, "n_rods_rng_lo_hi": [6, 14], "rod_len_px_lo_hi": [20, 70]}


def small_config(**overrides) -> CrystalConfig:
    return CrystalConfig.load({**load_preset("default").to_json_dict(), **SMALL, **overrides})


def small_config_file(tmp_path: Path, **overrides) -> Path:
    data = {**small_config().to_json_dict(), **overrides}
    path = tmp_path / "small.json"
    path.write_text(json.dumps(data))
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_output_is_byte_identical_whatever_the_number_of_workers(ray_local, tmp_path):
    config = small_config()
    one = generate_dataset(config, 10, tmp_path / "w1", seed=3, workers=1)
    three = generate_dataset(config, 10, tmp_path / "w3", seed=3, workers=3)
    assert one.rendered == three.rendered == 10
    a, b = tree_bytes(tmp_path / "w1"), tree_bytes(tmp_path / "w3")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_dataset_contents(ray_local, tmp_path):
    out = tmp_path / "ds"
    summary = generate_dataset(small_config(), 12, out, seed=1, split=(0.5, 0.25, 0.25))
    rows = read_manifest(out).to_pylist()
    assert [r["index"] for r in rows] == list(range(12))
    table = pq.read_table(out / "manifest.parquet")
    for column in ("index", "seed", "lambda", "t", "n_rods", "n_labels", "split", "image",
                   "path_labels_dota", "path_labels_yolo_obb", "path_labels"):
        assert column in table.column_names
    info = json.loads((out / "dataset.json").read_text())
    assert info["status"] == "complete" and info["kind"] == "crystals"
    assert info["config_hash"] == small_config().config_hash()
    assert info["counts"]["labels"] == sum(r["n_labels"] for r in rows) == summary.counts["labels"]
    listed = {s: (out / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert sorted(sum(listed.values(), [])) == sorted(f"./{r['image']}" for r in rows)
    assert all(listed[r["split"]].count(f"./{r['image']}") == 1 for r in rows)
    assert (out / "classes.txt").read_text().split() == ["Crystal"]
    assert "names" in (out / "dataset.yaml").read_text()
    for r in rows:
        assert (out / r["image"]).is_file()
        dota = parse_dota((out / r["path_labels_dota"]).read_text())
        yolo = parse_yolo_obb((out / r["path_labels_yolo_obb"]).read_text(), 192, 144, ["Crystal"])
        ultra = parse_ultralytics_obb((out / r["path_labels"]).read_text(), 192, 144, ["Crystal"])
        assert len(dota) == len(yolo) == len(ultra) == r["n_labels"]
        assert sum(b.truncated for b in dota) == r["n_truncated"]
        for line in (out / r["path_labels"]).read_text().splitlines():
            assert all(0.0 <= float(v) <= 1.0 for v in line.split()[1:])


def test_rerun_repairs_only_missing_or_corrupt_samples(ray_local, tmp_path):
    out = tmp_path / "ds"
    generate_dataset(small_config(), 8, out, seed=2)
    before = tree_bytes(out)
    (out / "images" / "0000001.png").unlink()
    (out / "labels_dota" / "0000004.txt").write_text("garbage")
    (out / "meta" / "0000006.json").unlink()
    again = generate_dataset(small_config(), 8, out, seed=2)
    assert (again.rendered, again.reused) == (3, 5)
    assert tree_bytes(out) == before


def test_resume_after_interrupted_run(tmp_path):
    """Ctrl-C a real CLI run part-way, then re-run the same command: it completes the rest."""
    out = tmp_path / "ds"
    n = 120  # enough that a quiet machine is still rendering when the interrupt arrives (~10 images/s)
    config = small_config_file(tmp_path, width=384, height=288, n_rods_rng_lo_hi=[30, 60])
    cmd = [sys.executable, "-m", "microforge", "synth", "crystals", "--preset", str(config),
           "--n", str(n), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "meta").glob("*.json"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode in (2, 130), output  # 130: Ctrl-C seen; 2: Ray Data ended early
    done_before = len(list((out / "meta").glob("*.json")))
    assert 3 <= done_before < n
    assert json.loads((out / "dataset.json").read_text())["status"] == "incomplete"
    assert not (out / "manifest.parquet").exists()
    assert not list(out.rglob("*.tmp"))
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{n - done_before} rendered, {done_before} already complete" in result.stdout
    assert read_manifest(out).num_rows == n


def test_other_config_is_refused_unless_overwrite(ray_local, tmp_path):
    out = tmp_path / "ds"
    generate_dataset(small_config(), 3, out)
    with pytest.raises(DatasetError, match="different config_hash"):
        generate_dataset(small_config(vignette_strength=0.123), 3, out)
    with pytest.raises(DatasetError, match="different seed"):
        generate_dataset(small_config(), 3, out, seed=9)
    (out / "notes.txt").write_text("mine")
    generate_dataset(small_config(vignette_strength=0.123), 2, out, overwrite=True)
    assert len(list((out / "images").iterdir())) == 2
    assert (out / "notes.txt").read_text() == "mine"  # overwrite removes only what the writer owns


def test_non_dataset_directory_is_refused(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "thesis.tex").write_text("x")
    with pytest.raises(DatasetError, match="not a microforge dataset"):
        generate_dataset(small_config(), 3, tmp_path / "ds")


def test_cli_prints_summary(ray_local, tmp_path, capsys):
    out = tmp_path / "ds"
    code = main(["synth", "crystals", "--preset", str(small_config_file(tmp_path)), "--n", "4",
                 "--out", str(out), "--format", "jpg", "--seed", "5"])
    assert code == 0
    text = capsys.readouterr().out
    assert f"dataset: {out}" in text and "images: 4 (4 rendered" in text and "images/s" in text
    assert all(p.suffix == ".jpg" for p in (out / "images").iterdir())


@pytest.mark.parametrize("args,message", [
    (["--n", "0"], "n must be a positive"),
    (["--n", "-5"], "n must be a positive"),
    (["--n", "3", "--preset", "nonexistent"], "unknown crystal preset"),
    (["--n", "3", "--workers", "0"], "workers must be positive"),
    (["--n", "3", "--split", "0.9,0.9,0.1"], "split must be"),
    (["--n", "3", "--split", "a,b"], "--split must be"),
    (["--n", "3", "--min-visible", "1.5"], "min_visible_fraction"),
])
def test_cli_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "ds"
    assert main(["synth", "crystals", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("overrides,message", [
    ({"widht": 100}, "unknown key 'widht' (did you mean 'width'?)"),
    ({"width": 0}, "width"),
    ({"height": -10}, "height"),
    ({"rod_len_px_lo_hi": [90, 20]}, "rod_len_px_lo_hi"),
    ({"bg_gray_range": [200, 100]}, "bg_gray_range"),
])
def test_cli_bad_config_files_exit_2_and_write_nothing(tmp_path, capsys, overrides, message):
    out = tmp_path / "ds"
    path = small_config_file(tmp_path, **overrides)
    assert main(["synth", "crystals", "--preset", str(path), "--n", "3", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_unwritable_output_exits_2(capsys):
    assert main(["synth", "crystals", "--n", "3", "--out", "/proc/microforge/ds"]) == 2
    assert "not writable" in capsys.readouterr().err
