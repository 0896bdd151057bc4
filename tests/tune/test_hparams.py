"""Hyperparameter search: spaces, resources, bad input, an ASHA search through the CLI, and the
restore of an interrupted search."""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from ray import tune

from microforge.platform.cli import main
from microforge.platform.errors import ConfigError
from microforge.trainers import latest_checkpoint, load_model, read_run
from microforge.tune import HparamSearch, load_search_space, resolve_tunable_trainer, run_hparam_search
from microforge.tune.cli import default_space
from microforge.tune.hparams import plan_trial_resources

# 2 optimizer steps of 8 blobs of 32 px per epoch, 8 validation blobs: seconds per epoch on a CPU.
SMALL = {"preset": "tiny", "image_size": 32, "train_samples": 16, "val_samples": 8, "batch_size": 8,
         "boundary_samples": 2}
UNET_NAMES = resolve_tunable_trainer("unet").hyperparameters()


def write_space(tmp_path, space, name=None):
    path = tmp_path / (name or f"space{len(list(tmp_path.glob('*.yaml')))}.yaml")
    path.write_text(yaml.safe_dump(space))
    return str(path)


def test_space_reads_constants_and_every_distribution():
    space = load_search_space({"lr": {"loguniform": ["1e-5", 1.0e-2]}, "warmup_fraction": {"uniform": [0, 0.1]},
                               "batch_size": {"choice": [4, 8]}, "preset": {"grid": ["tiny", "small"]},
                               "image_size": 64}, UNET_NAMES)
    assert space.constants == {"image_size": 64}
    assert space.params["lr"].args == (1e-5, 1e-2)  # YAML's 1e-5 (a string) is accepted as a bound
    assert space.grid_size() == 2
    assert space.example_config() == {"image_size": 64, "lr": 1e-5, "warmup_fraction": 0.0, "batch_size": 4,
                                      "preset": "tiny"}
    ps = space.param_space()
    assert isinstance(ps["lr"], tune.search.sample.Float) and ps["preset"] == {"grid_search": ["tiny", "small"]}
    assert isinstance(ps["batch_size"], tune.search.sample.Categorical)
    assert load_search_space(default_space("unet"), UNET_NAMES).params  # the shipped example is valid


@pytest.mark.parametrize("space, message", [
    ({"lrr": {"loguniform": [1e-5, 1e-2]}}, "unknown hyperparameter 'lrr' (did you mean 'lr'?)"),
    ({"lr": {"log_uniform": [1e-5, 1e-2]}}, "invalid distribution 'log_uniform' (did you mean 'loguniform'?)"),
    ({"lr": {"gaussian": [0, 1]}}, "invalid distribution 'gaussian'; valid: uniform, loguniform, choice, grid"),
    ({"lr": {"uniform": [0.1, 0.01]}}, "uniform needs low < high"),
    ({"lr": {"loguniform": [0, 0.1]}}, "loguniform needs low > 0"),
    ({"lr": {"uniform": [0.1]}}, "uniform takes [low, high]"),
    ({"batch_size": {"choice": []}}, "choice takes a non-empty list"),
    ({"lr": {"uniform": [0, 1], "choice": [1]}}, "must be a constant or one distribution"),
    ({"lr": 0.001}, "nothing to search"),
])
def test_space_errors_name_the_problem(space, message):
    with pytest.raises(ConfigError) as info:
        load_search_space(space, UNET_NAMES)
    assert message in str(info.value)


def test_trial_resources_leave_a_cpu_to_the_data():
    search = HparamSearch(trainer="unet", space={"lr": {"choice": [1e-3]}})
    assert plan_trial_resources(search, 2, 0) == (0.99, 1)
    assert plan_trial_resources(HparamSearch(**{**search.__dict__, "cpus_per_trial": 0.45}), 2, 0) == (0.45, 2)
    assert plan_trial_resources(search, 16, 0) == (1.0, 14)
    gpu = HparamSearch(**{**search.__dict__, "gpus_per_trial": 1.0})
    assert plan_trial_resources(gpu, 16, 4) == (1.0, 4)
    assert plan_trial_resources(HparamSearch(**{**gpu.__dict__, "max_concurrent": 2}), 16, 4) == (1.0, 2)
    with pytest.raises(ConfigError, match="needs 1 GPUs but the Ray cluster has 0"):
        plan_trial_resources(gpu, 16, 0)
    with pytest.raises(ConfigError, match="not enough for a trial"):
        plan_trial_resources(search, 1, 0)


def test_bad_hparam_input_exits_2(tmp_path, capsys):
    def run(*args):
        code = main(["tune", "hparams", "--samples", "1", "--max-epochs", "1", "--out", str(tmp_path / "tune"), *args])
        return code, capsys.readouterr().err

    ok = write_space(tmp_path, {**SMALL, "lr": {"choice": [1e-3]}}, "ok.yaml")
    cases = [
        (["--trainer", "unet", "--space", write_space(tmp_path, {"lrr": {"uniform": [0, 1]}})],
         "unknown hyperparameter 'lrr' (did you mean 'lr'?)"),
        (["--trainer", "unet", "--space", write_space(tmp_path, {"lr": {"gaussian": [0, 1]}})],
         "invalid distribution 'gaussian'"),
        (["--trainer", "unett", "--space", ok], "unknown trainer 'unett' (did you mean 'unet'?)"),
        (["--trainer", "unett"], "unknown trainer 'unett' (did you mean 'unet'?)"),
        (["--trainer", "unet", "--space", write_space(tmp_path, {**SMALL, "image_size": {"choice": [32, 36]}})],
         "image size 36 does not fit U-Net preset 'tiny': use a multiple of 8"),
        (["--trainer", "unet", "--space", write_space(tmp_path, {**SMALL, "preset": {"grid": ["tiny", "hudge"]}})],
         "unknown U-Net preset 'hudge'"),
        (["--trainer", "unet", "--space", write_space(tmp_path, {**SMALL, "lr": {"uniform": [-1.0, 1.0]}})],
         "UNetModule: need lr > 0"),
        (["--trainer", "unet", "--space", str(tmp_path / "missing.yaml")], "config file not found"),
        (["--space", ok], "tune hparams needs --trainer"),
        (["--resume", str(tmp_path)], "is not a microforge tune experiment"),
        (["--trainer", "unet", "--space", ok, "--max-epochs", "0"], "max epochs must be an integer >= 1"),
    ]
    for args, message in cases:
        code, err = run(*args)
        assert code == 2 and err.startswith("microforge: error: ") and message in err, (args, err)
    (tmp_path / "tune" / "taken").mkdir(parents=True)
    code, err = run("--trainer", "unet", "--space", ok, "--name", "taken")
    assert code == 2 and "exists already: resume it with --resume" in err


def test_asha_search_finishes_with_a_best_trial_and_an_exported_artifact(ray_local, tmp_path, capsys):
    space = write_space(tmp_path, {**SMALL, "lr": {"grid": [3.0e-3, 1.0e-4]}})
    code = main(["tune", "hparams", "--trainer", "unet", "--space", space, "--samples", "1", "--max-epochs", "2",
                 "--scheduler", "asha", "--cpus-per-trial", "0.45", "--out", str(tmp_path / "tune"), "--name", "e"])
    out = capsys.readouterr().out
    assert code == 0, out
    experiment = tmp_path / "tune" / "e"
    assert f"experiment: {experiment}" in out and "Ray dashboard:" in out
    assert f"TensorBoard: tensorboard --logdir {experiment}" in out
    results = pd.read_parquet(experiment / "results.parquet")
    assert len(results) == 2 and set(results["config/lr"]) == {3e-3, 1e-4}
    assert set(results["status"]) <= {"finished", "stopped"} and "finished" in set(results["status"])
    best = results.iloc[0]  # best first
    assert best["status"] == "finished" and best["epochs"] == 2 and 0.0 <= best["score"] <= 1.0
    assert f"best trial: {best['trial_id']}" in out and f"best model: {experiment / 'best_model'}" in out
    model = load_model(experiment / "best_model")
    assert model.config["base_channels"] == 8
    for row in results.itertuples():  # one TensorBoard log per trial, under the experiment directory
        assert list((Path(row.run_dir) / "tensorboard").glob("events.out.tfevents.*"))
    assert read_run(best["run_dir"])["status"] == "finished"


def test_an_interrupted_search_resumes_and_its_trial_continues_from_its_checkpoint(ray_local, tmp_path, capsys,
                                                                                 monkeypatch):
    """The trial crashes once at the start of its second epoch (a lost node, say); ``--resume``
    restores the Tuner, which runs the errored trial again, continuing its run from epoch 1's checkpoint."""
    from microforge.tune.trainers import TUNABLE_TRAINERS

    from tests.tune.crashing import CRASH_ONCE

    monkeypatch.setitem(TUNABLE_TRAINERS, CRASH_ONCE.name, CRASH_ONCE)
    marker = tmp_path / "crashed"
    search = HparamSearch(trainer=CRASH_ONCE.name, space={**SMALL, "crash_marker": str(marker),
                                                          "lr": {"choice": [1e-3]}},
                          samples=1, max_epochs=2, scheduler="none", cpus_per_trial=0.45)
    first = run_hparam_search(search, tmp_path / "tune", name="e")
    [trial] = first.trials
    assert marker.is_file() and first.best is None and first.best_model is None
    assert trial.status == "error" and "injected crash" in trial.error and trial.epochs == 1
    checkpoint, progress = latest_checkpoint(trial.run_dir)
    assert progress["epoch"] == 0 and read_run(trial.run_dir)["status"] == "failed"

    assert main(["tune", "hparams", "--resume", str(first.experiment_dir)]) == 0
    out = capsys.readouterr().out
    assert f"best trial: {trial.trial_id}" in out
    record = read_run(trial.run_dir)
    assert record["status"] == "finished" and record["epochs_completed"] == 2
    latest, progress = latest_checkpoint(trial.run_dir)
    assert progress["epoch"] == 1 and progress["step"] == 4  # 2 steps per epoch, continued after epoch 1
    assert checkpoint.is_dir() and latest != checkpoint  # epoch 1's checkpoint from before the crash is kept
    assert (first.experiment_dir / "best_model" / "model.json").is_file()
    assert pd.read_parquet(first.experiment_dir / "results.parquet")["status"].tolist() == ["finished"]
