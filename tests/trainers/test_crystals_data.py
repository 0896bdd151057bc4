"""``microforge train crystals --data DIR`` end to end: a dataset rendered by ``microforge synth
crystals`` (tiny canvases), one epoch through the manifest reader and its OBB labels, a ``detect``
artifact out; a directory without OBB labels is one line, exit 2, nothing written."""

import json

import pytest

from microforge.platform.cli import main
from microforge.trainers import load_artifact, read_run

TINY_CRYSTALS = {"width": 64, "height": 64, "n_rods_rng_lo_hi": [2, 6], "rod_len_px_lo_hi": [12, 32],
                 "scalebar_enable": False}

pytestmark = pytest.mark.slow  # ~60 s on 2 busy cores: a synth run and a Ray Train run


def test_train_crystals_from_a_rendered_dataset_directory(ray_local, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps(TINY_CRYSTALS))
    data, runs = tmp_path / "crystals", tmp_path / "runs"
    assert main(["synth", "crystals", "--preset", str(preset), "--n", "6", "--out", str(data), "--seed", "1",
                 "--split", "0.5,0.5,0", "--workers", "1"]) == 0
    assert (data / "manifest.parquet").is_file()
    capsys.readouterr()
    assert main(["train", "crystals", "--data", str(data), "--preset", "tiny", "--size", "64", "--batch-size", "2",
                 "--epochs", "1", "--workers", "1", "--name", "d", "--out", str(runs)]) == 0
    printed = capsys.readouterr().out
    assert f"artifact: {runs / 'd' / 'model'}" in printed
    record = read_run(runs / "d")
    assert record["status"] == "finished" and record["epochs_completed"] == 1
    assert record["options"]["data"] == str(data) and record["options"]["synth"] is None
    assert "val_ap50" in record["best_metrics"]  # the dataset's val split was scored
    artifact = load_artifact(runs / "d" / "model")
    assert (artifact.task, artifact.workload) == ("detect", "crystals")

    # Images without OBB labels: one line, exit 2, no run written.
    (tmp_path / "plain").mkdir()
    assert main(["train", "crystals", "--data", str(tmp_path / "plain"), "--epochs", "1", "--name", "bad",
                 "--out", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1, err
    assert not (runs / "bad").exists()
