"""Stored batch-size recommendations and their automatic use by ``microforge train``."""

import json
import logging
from pathlib import Path

import pytest

from microforge.platform.cli import main
from microforge.trainers import TrainingResult
from microforge.tune import (
    BatchSearchResult,
    BatchSizeReport,
    ProbeResult,
    Recommendation,
    find_recommendation,
    load_recommendations,
    recommendations_from_report,
    save_recommendations,
)
from microforge.platform.recommendations import RecommendationError, physical_memory_bytes, recommendations_path

GiB = 2**30
H100 = 85_520_809_984  # total memory torch reports for an 80 GB H100


def record(**overrides):
    fields = dict(workload="delineation", preset="tiny", resolution=32, precision="32-true", device="cpu",
                  device_memory_bytes=4 * GiB, max_batch=24, best_batch=16, samples_per_s=120.0, step_time_s=0.13,
                  peak_memory_bytes=3 * GiB)
    return Recommendation(**{**fields, **overrides})


def test_store_replaces_records_of_the_same_key_and_keeps_the_others(state_home):
    save_recommendations([record(), record(preset="small", best_batch=4, max_batch=6)])
    path = save_recommendations([record(best_batch=12)])
    assert path == state_home / "batch_size_recommendations.json" == recommendations_path()
    stored = {r.preset: r for r in load_recommendations()}
    assert set(stored) == {"tiny", "small"}
    assert stored["tiny"].best_batch == 12 and stored["small"].best_batch == 4
    assert stored["tiny"].measured  # a UTC time stamp
    assert json.loads(path.read_text())["format"] == 1


def test_lookup_matches_every_key_field(state_home):
    save_recommendations([
        record(device="NVIDIA H100 80GB HBM3", device_memory_bytes=H100, precision="bf16-mixed", best_batch=96),
        record(device="cpu", device_memory_bytes=2 * GiB, best_batch=4),
        record(device="cpu", device_memory_bytes=8 * GiB, best_batch=16),
    ])
    gpu = dict(device="NVIDIA H100 80GB HBM3", device_memory_bytes=H100 - 2**20)  # 1 MiB off: same card
    assert find_recommendation("delineation", "tiny", 32, "bf16-mixed", **gpu).best_batch == 96
    assert find_recommendation("delineation", "tiny", 32, "16-mixed", **gpu) is None
    assert find_recommendation("delineation", "tiny", 64, "bf16-mixed", **gpu) is None
    assert find_recommendation("delineation", "small", 32, "bf16-mixed", **gpu) is None
    assert find_recommendation("delineation", "tiny", 32, "bf16-mixed", device="NVIDIA H100 80GB HBM3",
                               device_memory_bytes=H100 + 16 * GiB) is None  # the 94 GB card
    # CPU: the largest budget that fits in the machine's memory
    cpu = dict(device="cpu")
    assert find_recommendation("delineation", "tiny", 32, "32-true", **cpu, device_memory_bytes=16 * GiB).best_batch == 16
    assert find_recommendation("delineation", "tiny", 32, "32-true", device="cpu", device_memory_bytes=4 * GiB).best_batch == 4
    assert find_recommendation("delineation", "tiny", 32, "32-true", device="cpu", device_memory_bytes=GiB) is None


def test_records_from_a_search_report():
    probes = (ProbeResult(1, "ok", 0.01, 100), ProbeResult(2, "ok", 0.015, 150), ProbeResult(4, "oom"),
              ProbeResult(3, "oom"))
    report = BatchSizeReport(workload="delineation", presets=("small",), resolutions=(256,), precision="bf16-mixed",
                             device="NVIDIA A100-SXM4-40GB", device_memory_bytes=42_298_834_944,
                             results={("small", 256): BatchSearchResult(max_batch=2, best_batch=2, probes=probes)})
    [rec] = recommendations_from_report(report)
    assert (rec.workload, rec.preset, rec.resolution, rec.max_batch, rec.best_batch, rec.peak_memory_bytes) == (
        "delineation", "small", 256, 2, 2, 150)
    assert not rec.recommended  # one preset searched: no preset to recommend
    assert rec.samples_per_s == pytest.approx(2 / 0.015) and rec.device_memory_bytes == 42_298_834_944


def test_records_written_before_workloads_still_load(state_home):
    path = save_recommendations([record()])
    data = json.loads(path.read_text())
    data["recommendations"][0]["trainer"] = data["recommendations"][0].pop("workload")
    path.write_text(json.dumps(data))
    [old] = load_recommendations()
    assert old == record(measured=old.measured)


def test_records_stored_under_an_alias_are_read_as_the_workload_it_names(state_home):
    """``unet`` was the delineation workload's name: its records apply, and a new search replaces them."""
    path = save_recommendations([record(best_batch=6)])
    data = json.loads(path.read_text())
    data["recommendations"][0]["workload"] = "unet"
    path.write_text(json.dumps(data))
    [old] = load_recommendations()
    assert old.workload == "delineation"
    assert find_recommendation("delineation", "tiny", 32, "32-true", device="cpu",
                               device_memory_bytes=8 * GiB).best_batch == 6
    save_recommendations([record(best_batch=9)])
    [new] = load_recommendations()
    assert (new.workload, new.best_batch) == ("delineation", 9)


def test_a_new_comparison_moves_the_preset_mark_and_a_lone_remeasure_keeps_it(state_home):
    lookup = dict(device="cpu", device_memory_bytes=8 * GiB)
    save_recommendations([record(preset="tiny", recommended=True), record(preset="small"),
                          record(preset="tiny", resolution=64, recommended=True)])
    assert find_recommendation("delineation", None, 32, "32-true", **lookup).preset == "tiny"
    save_recommendations([record(preset="tiny"), record(preset="small", best_batch=3, recommended=True)])
    found = find_recommendation("delineation", None, 32, "32-true", **lookup)
    assert (found.preset, found.best_batch) == ("small", 3)
    save_recommendations([record(preset="small", best_batch=2)])  # one preset re-measured: still the choice
    found = find_recommendation("delineation", None, 32, "32-true", **lookup)
    assert (found.preset, found.best_batch) == ("small", 2)
    assert [r.preset for r in load_recommendations() if r.recommended and r.resolution == 32] == ["small"]
    assert find_recommendation("delineation", None, 64, "32-true", **lookup).preset == "tiny"  # another key


def test_platform_recommendations_know_nothing_of_tune():
    import microforge.platform.recommendations as module

    assert "tune" not in Path(module.__file__).read_text()


def test_a_corrupt_store_is_an_error_that_says_what_to_do(state_home):
    recommendations_path().write_text("{not json")
    with pytest.raises(RecommendationError, match="delete it"):
        load_recommendations()


@pytest.fixture()
def fake_launch(monkeypatch, tmp_path):
    """Replace the launcher: record the job the train command builds instead of training it."""
    jobs = []

    def launch(job, *, resume=False, address=None, callbacks=()):
        jobs.append(job)
        run_dir = Path(job.runs_dir) / job.name
        return TrainingResult(run_dir=run_dir, best_checkpoint=None, metrics={"epoch": 0, "val_dice": 0.5},
                              last_metrics={}, epochs_completed=1, artifact=run_dir / "model", seconds=0.1)

    monkeypatch.setattr("microforge.trainers.launcher.launch", launch)
    return jobs


TRAIN = ["train", "unet", "--preset", "tiny", "--size", "32", "--epochs", "1", "--name", "r"]


def test_train_applies_the_matching_recommendation_and_an_explicit_batch_size_wins(state_home, fake_launch,
                                                                                   tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="microforge.trainers.cli")
    memory = physical_memory_bytes()
    save_recommendations([record(device_memory_bytes=memory // 2, best_batch=5, max_batch=7),
                          record(device_memory_bytes=memory // 2, precision="bf16-mixed", best_batch=3)])
    out = ["--out", str(tmp_path / "runs")]

    assert main([*TRAIN, *out]) == 0  # --precision auto on CPUs is 32-true
    assert fake_launch[-1].batch_size == 5
    assert "batch size 5: the recommendation for delineation tiny at 32 px, 32-true on cpu" in caplog.text
    assert "largest that fits: 7" in caplog.text

    assert main([*TRAIN, "--precision", "bf16-mixed", *out]) == 0
    assert fake_launch[-1].batch_size == 3

    caplog.clear()
    assert main([*TRAIN, "--batch-size", "11", *out]) == 0
    assert fake_launch[-1].batch_size == 11 and "recommendation" not in caplog.text

    assert main([*TRAIN, "--size", "64", *out]) == 0  # no record for 64 px: the fixed default
    assert fake_launch[-1].batch_size == 8 and "recommendation" not in caplog.text
    capsys.readouterr()


def test_no_store_means_the_fixed_default(state_home, fake_launch, tmp_path):
    assert main([*TRAIN, "--out", str(tmp_path / "runs")]) == 0
    assert fake_launch[-1].batch_size == 8
