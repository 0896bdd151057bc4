"""The generic launcher's pieces: workload registry, resources, per-epoch data, run records and resume checks.

The end-to-end Ray Train runs live in test_unet_training.py; everything here is fast.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
from ray.data.dataset import MaterializedDataset

from microforge.platform.cli import main
from microforge.platform.errors import ConfigError
from microforge.trainers import (
    EarlyStopping,
    EpochBatches,
    EpochContext,
    RunError,
    Scaling,
    SyntheticData,
    Workload,
    find_run,
    get_workload,
    latest_checkpoint,
    launch,
    load_job,
    plan_worker_cpus,
    register_workload,
)
from microforge.trainers.data import rank_indices
from microforge.trainers.runs import RUN_FILE
from microforge.trainers.unet.lightning import curriculum_settings
from microforge.trainers.worker import CHECKPOINT_FILE, PROGRESS_FILE

RENDERER = "microforge.datasets.blobs:render_blob_batch"


def small_job(tmp_path, **overrides):
    job = get_workload("delineation").job({"image_size": 32, "train_samples": 8, "val_samples": 4}, epochs=2,
                                          runs_dir=tmp_path / "runs", batch_size=4, name="r1")
    return replace(job, **overrides)


def fake_run(job, epochs_done: int):
    """A run directory as the launcher leaves it, with a (fake) checkpoint after ``epochs_done``."""
    run_dir = job.runs_dir / job.name
    run_dir.mkdir(parents=True)
    (run_dir / RUN_FILE).write_text(json.dumps({**job.record(), "name": job.name, "status": "finished"}))
    if epochs_done:
        ckpt = run_dir / "checkpoint_2026-01-01_00-00-00.000000"
        ckpt.mkdir()
        (ckpt / CHECKPOINT_FILE).write_bytes(b"weights")
        (ckpt / PROGRESS_FILE).write_text(json.dumps({"epoch": epochs_done - 1, "val_dice": 0.5}))
    return run_dir


# -- registry ----------------------------------------------------------------------------------


def test_workloads_resolve_by_name_and_alias():
    from microforge.trainers.unet.lightning import UNetModule

    delineation = get_workload("delineation")
    assert get_workload("unet") is delineation and delineation.serve_task == "segment"
    module = delineation.probe_module("tiny", 32)
    assert isinstance(module, UNetModule) and module.hparams.image_size == 32


def test_unknown_workload_suggests_the_closest_and_lists_them():
    with pytest.raises(ConfigError, match=r"unknown workload 'delineaton' \(did you mean 'delineation'\?\); valid: "):
        get_workload("delineaton")


def test_cli_unknown_workload_is_one_line_with_did_you_mean(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "delineaton", "--epochs", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "invalid choice: 'delineaton' (did you mean 'delineation'?); valid: " in err
    valid = err.rsplit("valid: ", 1)[1].split(" (see")[0].split(", ")
    assert {"delineation", "unet", "fastgan", "cyclegan", "crystals"} <= set(valid)


def test_registration_refuses_a_taken_name_and_bad_specs():
    spec = get_workload("delineation")
    with pytest.raises(ConfigError, match="'unet' is taken by workload 'delineation'"):
        register_workload(replace(spec, name="other"))
    with pytest.raises(ConfigError, match="gradient clipping is Lightning's automatic optimisation only"):
        replace(spec, optimization="manual")
    with pytest.raises(ConfigError, match="unknown serve task 'segmnet'.*did you mean 'segment'"):
        replace(spec, serve_task="segmnet")
    with pytest.raises(ConfigError, match="unknown transform"):
        replace(spec, transform={"name": "zscore"})
    assert isinstance(spec, Workload)


def test_options_are_validated_with_did_you_mean():
    spec = get_workload("delineation")
    with pytest.raises(ConfigError, match="unknown key 'lrr' \\(did you mean 'lr'\\?\\)"):
        spec.job({"lrr": 1.0}, epochs=1, runs_dir=".")
    assert spec.load_options({"preset": "small"}).image_size == 256  # the preset's default size


# -- resources and data --------------------------------------------------------------------------


@pytest.mark.parametrize("workers, cpus, expected", [(2, 2, 0.5), (1, 2, 1.0), (4, 2, 0.25), (2, 64, 1.0)])
def test_worker_cpus_leave_one_cpu_for_synthesis(workers, cpus, expected):
    assert plan_worker_cpus(Scaling(num_workers=workers), cpus) == expected
    assert plan_worker_cpus(Scaling(num_workers=workers, cpus_per_worker=3.0), cpus) == 3.0


def test_rank_shares_are_equal_and_disjoint():
    shares = [list(rank_indices(10, r, 3)) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert sorted(sum(shares, [])) == list(range(9))


def test_epoch_indices_are_disjoint_from_validation_and_other_epochs(ray_local):
    data = SyntheticData(RENDERER, {"size": 32}, seed=3, train_samples=6, val_samples=4, rows_per_task=4)

    def indices(epoch, rank, world):
        rows = data.epoch_dataset("train", EpochContext(epoch, 4, rank, world)).to_dataset().take_all()
        return [int(r["index"]) for r in rows]

    one = indices(1, 0, 1)
    assert one == list(range(4 + 6, 4 + 12))
    assert sorted(indices(1, 0, 2) + indices(1, 1, 2)) == one  # same samples whatever the workers
    assert set(indices(0, 0, 1)).isdisjoint(one)


def test_epoch_dataset_renders_the_curriculum_of_its_epoch(ray_local):
    data = SyntheticData(RENDERER, {"size": 32}, seed=3, train_samples=4, val_samples=2,
                         schedule="microforge.trainers.unet.lightning:curriculum_settings")
    first = data.epoch_dataset("train", EpochContext(0, 10, 1, 2)).to_dataset().take_all()
    again = data.epoch_dataset("train", EpochContext(0, 10, 1, 2)).to_dataset().take_all()
    assert [r["index"] for r in first] == [3, 5]
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert data.train_kwargs(0, 10) == curriculum_settings(0, 10) == {"noise_scale": 0.1, "mixed_prob": 0.0}
    assert data.train_kwargs(9, 10) == {"noise_scale": 1.0, "mixed_prob": 0.6}
    val = data.driver_datasets()["val"]
    assert isinstance(val, MaterializedDataset)  # rendered once, read again every epoch
    assert [r["index"] for r in val.take_all()] == [r["index"] for r in val.take_all()] == [0, 1]


def test_epoch_batches_reopen_every_epoch_and_know_their_length():
    opened = []
    batches = EpochBatches(lambda: opened.append(1) or iter([1, 2, 3]), batches=3)
    assert list(batches) == list(batches) == [1, 2, 3]
    assert len(opened) == 2 and len(batches) == 3
    with pytest.raises(TypeError):
        len(EpochBatches(lambda: iter([])))


# -- jobs, run records, resume checks ------------------------------------------------------------


def test_job_checks_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="epochs"):
        small_job(tmp_path, epochs=0).check()
    with pytest.raises(ConfigError, match="precision"):
        small_job(tmp_path, precision="fp8").check()
    with pytest.raises(ConfigError, match="automatic optimisation only"):
        small_job(tmp_path, optimization="manual").check()
    with pytest.raises(ConfigError, match="each of the 16 worker"):
        small_job(tmp_path, scaling=Scaling(num_workers=16)).check()
    with pytest.raises(ConfigError, match="fewer than one batch of 1000"):
        small_job(tmp_path, batch_size=1000).check()
    with pytest.raises(ConfigError, match="num_workers"):
        Scaling(num_workers=0)
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping(patience=0)


def test_invalid_module_config_fails_before_anything_is_written(tmp_path):
    job = small_job(tmp_path, module_config={**small_job(tmp_path).module_config, "image_size": 36})
    with pytest.raises(ConfigError, match="multiple of 8"):
        launch(job)
    assert not (tmp_path / "runs" / "r1").exists()


def test_load_job_round_trips_the_record(tmp_path):
    job = small_job(tmp_path)
    fake_run(job, 1)
    again = load_job("r1", tmp_path / "runs")
    assert again.record() == job.record()
    assert find_run(tmp_path / "runs" / "r1") == (tmp_path / "runs" / "r1").absolute()
    assert latest_checkpoint(tmp_path / "runs" / "r1")[1]["epoch"] == 0


@pytest.mark.parametrize("change, epochs_done, message", [
    ({}, 0, "no checkpoint yet"),
    ({}, 2, "already trained 2 of 2 epochs"),
    ({"options": {"preset": "small"}}, 1, "options.preset: run has 'tiny'"),
])
def test_resume_refuses_runs_it_cannot_continue(tmp_path, change, epochs_done, message):
    job = small_job(tmp_path)
    run_dir = fake_run(job, epochs_done)
    before = (run_dir / RUN_FILE).read_text()
    with pytest.raises(RunError, match=message):
        launch(replace(job, **change), resume=True)
    assert (run_dir / RUN_FILE).read_text() == before


def test_resume_of_a_missing_run(tmp_path):
    with pytest.raises(RunError, match="no run 'r1' to resume"):
        launch(small_job(tmp_path), resume=True)


def test_new_run_refuses_an_existing_directory(tmp_path):
    job = small_job(tmp_path)
    fake_run(job, 1)
    with pytest.raises(RunError, match="exists already"):
        launch(job)


def test_cli_bad_resume_exits_2_and_changes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "unet", "--resume", "nope", "--out", str(runs)]) == 2
    assert "no run 'nope' to resume" in capsys.readouterr().err

    run_dir = fake_run(small_job(tmp_path), 1)
    before = (run_dir / RUN_FILE).read_text()
    assert main(["train", "unet", "--resume", "r1", "--out", str(runs), "--size", "64"]) == 2
    assert "--image-size 64 (the run has 32)" in capsys.readouterr().err
    assert main(["train", "unet", "--resume", str(run_dir), "--epochs", "1"]) == 2
    assert "already trained 1 of 1 epochs" in capsys.readouterr().err
    (run_dir / RUN_FILE).write_text("{not json")
    assert main(["train", "unet", "--resume", str(run_dir)]) == 2
    assert "unreadable" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint_2026-01-01_00-00-00.000000", RUN_FILE]
    (run_dir / RUN_FILE).write_text(before)
