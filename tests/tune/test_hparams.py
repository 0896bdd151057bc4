"""Hyperparameter search: spaces, resources, bad input, a small search through the CLI, and (slow)
an ASHA search and the restore of an interrupted search."""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from ray import tune

from microforge.platform.cli import main
from microforge.platform.errors import ConfigError
from microforge.trainers import load_model
from microforge.trainers.runs import latest_checkpoint, read_run
from microforge.trainers.workload import get_workload
from microforge.tune import HparamSearch, hyperparameters, load_search_space, run_hparam_search
from microforge.tune.trials import build_trial_job, max_reports, plan_trial_resources

# 2 optimizer steps of 8 blobs of 32 px per epoch, 8 validation blobs: seconds per epoch on a CPU.
SMALL = {"preset": "tiny", "image_size": 32, "train_samples": 16, "val_samples": 8, "batch_size": 8,
         "boundary_samples": 2}
DELINEATION = get_workload("delineation")
UNET_NAMES = hyperparameters(DELINEATION)


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
    assert load_search_space(DELINEATION.default_space(), UNET_NAMES).params  # the default space is valid


def test_a_trial_job_is_the_workloads_job_with_the_job_hyperparameters(tmp_path):
    job = build_trial_job(DELINEATION, {**SMALL, "lr": 3e-3, "precision": "fp32", "gradient_clip_val": 0.5},
                          epochs=3, runs_dir=tmp_path, name="run", cpus_per_worker=0.45)
    assert (job.workload, job.epochs, job.name, job.batch_size, job.precision) == ("delineation", 3, "run", 8, "fp32")
    assert job.gradient_clip_val == 0.5 and job.early_stopping is None and job.monitor == "val_dice"
    assert job.module_config["lr"] == 3e-3 and job.options["train_samples"] == 16
    assert (job.scaling.num_workers, job.scaling.use_gpu, job.scaling.cpus_per_worker) == (1, False, 0.45)
    assert max_reports(DELINEATION, 10, None) == 10  # ASHA's clock: one report per epoch


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
    search = HparamSearch(workload="delineation", space={"lr": {"choice": [1e-3]}})
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
        (["--workload", "delineation", "--space", write_space(tmp_path, {"lrr": {"uniform": [0, 1]}})],
         "unknown hyperparameter 'lrr' (did you mean 'lr'?)"),
        # the old flag and name still work: the workload is found and its options checked
        (["--trainer", "unet", "--space", write_space(tmp_path, {"batch_sise": {"choice": [4]}})],
         "unknown hyperparameter 'batch_sise' (did you mean 'batch_size'?)"),
        (["--workload", "delineation", "--space", write_space(tmp_path, {"lr": {"gaussian": [0, 1]}})],
         "invalid distribution 'gaussian'"),
        (["--workload", "delineatio", "--space", ok], "unknown workload 'delineatio' (did you mean 'delineation'?)"),
        (["--workload", "unett"], "unknown workload 'unett' (did you mean 'unet'?)"),
        (["--workload", "delineation", "--space",
          write_space(tmp_path, {**SMALL, "image_size": {"choice": [32, 36]}})], "use a multiple of 8"),
        (["--workload", "delineation", "--space",
          write_space(tmp_path, {**SMALL, "preset": {"grid": ["tiny", "hudge"]}})],
         "DelineationOptions.preset: Input should be 'tiny', 'small' or 'standard'"),
        (["--workload", "delineation", "--space",
          write_space(tmp_path, {**SMALL, "lr": {"uniform": [-1.0, 1.0]}})],
         "DelineationOptions.lr: Input should be greater than 0"),
        (["--workload", "delineation", "--space", str(tmp_path / "missing.yaml")], "config file not found"),
        (["--space", ok], "tune hparams needs --workload"),
        (["--resume", str(tmp_path)], "is not a microforge tune experiment"),
        (["--workload", "delineation", "--space", ok, "--max-epochs", "0"], "max epochs must be an integer >= 1"),
    ]
    for args, message in cases:
        code, err = run(*args)
        assert code == 2 and err.startswith("microforge: error: ") and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "tune").exists()  # nothing written
    (tmp_path / "tune" / "taken").mkdir(parents=True)
    code, err = run("--workload", "delineation", "--space", ok, "--name", "taken")
    assert code == 2 and "exists already: resume it with --resume" in err


def search_two_learning_rates(tmp_path, capsys, *flags):
    """``tune hparams`` over two learning rates on the small data: (output, experiment dir, results)."""
    space = write_space(tmp_path, {**SMALL, "lr": {"grid": [3.0e-3, 1.0e-4]}})
    code = main(["tune", "hparams", "--workload", "delineation", "--space", space, "--samples", "1",
                 "--cpus-per-trial", "0.45", "--out", str(tmp_path / "tune"), "--name", "e", *flags])
    out = capsys.readouterr().out
    assert code == 0, out
    experiment = tmp_path / "tune" / "e"
    results = pd.read_parquet(experiment / "results.parquet")
    assert len(results) == 2 and set(results["config/lr"]) == {3e-3, 1e-4}
    return out, experiment, results


# The default suite runs its one end-to-end search in tests/workloads (the toy GAN, 2 trials).
@pytest.mark.slow
def test_small_search_finishes_with_a_best_trial_and_an_exported_model(ray_local, tmp_path, capsys):
    """Two one-epoch trials at once (tiny U-Net, 32 px, 16 blobs), no scheduler."""
    out, experiment, results = search_two_learning_rates(tmp_path, capsys, "--max-epochs", "1", "--scheduler", "none")
    assert f"experiment: {experiment}" in out and "Ray dashboard:" in out
    assert list(results["status"]) == ["finished", "finished"] and list(results["epochs"]) == [1, 1]
    assert results["score"].is_monotonic_decreasing  # best first (val_dice is maximised)
    best = results.iloc[0]
    assert f"best trial: {best['trial_id']}" in out and f"best model: {experiment / 'best_model'}" in out
    assert load_model(experiment / "best_model").config["base_channels"] == 8
    assert read_run(best["run_dir"])["workload"] == "delineation"


@pytest.mark.slow
def test_asha_search_finishes_with_a_best_trial_and_an_exported_artifact(ray_local, tmp_path, capsys):
    out, experiment, results = search_two_learning_rates(tmp_path, capsys, "--max-epochs", "2", "--scheduler", "asha")
    assert f"TensorBoard: tensorboard --logdir {experiment}" in out
    assert set(results["status"]) <= {"finished", "stopped"} and "finished" in set(results["status"])
    best = results.iloc[0]  # best first
    assert best["status"] == "finished" and best["epochs"] == 2 and 0.0 <= best["score"] <= 1.0
    assert f"best trial: {best['trial_id']}" in out and f"best model: {experiment / 'best_model'}" in out
    model = load_model(experiment / "best_model")
    assert model.config["base_channels"] == 8
    for row in results.itertuples():  # one TensorBoard log per trial, under the experiment directory
        assert list((Path(row.run_dir) / "tensorboard").glob("events.out.tfevents.*"))
    assert read_run(best["run_dir"])["status"] == "finished"


@pytest.mark.slow
def test_an_interrupted_search_resumes_and_its_trial_continues_from_its_checkpoint(ray_local, tmp_path, capsys,
                                                                                 monkeypatch):
    """The trial crashes once at the start of its second epoch (a lost node, say); ``--resume``
    restores the Tuner, which runs the errored trial again, continuing its run from epoch 1's
    checkpoint. The workload is registered in this process only: trials get the object itself."""
    from microforge.trainers import workload as workload_registry

    from tests.tune.crashing import CRASH_ONCE

    monkeypatch.setitem(workload_registry._REGISTERED, CRASH_ONCE.name, CRASH_ONCE)
    marker = tmp_path / "crashed"
    search = HparamSearch(workload=CRASH_ONCE, space={**SMALL, "crash_marker": str(marker), "lr": {"choice": [1e-3]}},
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


def test_pbt_perturbs_the_sampled_values_and_needs_one():
    from microforge.tune.hparams import _scheduler

    fastgan = get_workload("fastgan")
    search = HparamSearch(workload=fastgan, scheduler="pbt", perturbation_interval=3)
    workload, space, _ = search.check()
    assert set(space.params) == {"lr_g", "lr_d"}  # the default space: PBT over the two learning rates
    scheduler = _scheduler(search, space, reports=10)
    assert scheduler._perturbation_interval == 3 and set(scheduler._hyperparam_mutations) == {"lr_g", "lr_d"}
    with pytest.raises(ConfigError, match="pbt perturbs"):
        HparamSearch(workload=DELINEATION, space={**SMALL, "lr": {"grid": [1e-3, 1e-4]}}, scheduler="pbt").check()
    with pytest.raises(ConfigError, match="perturbation interval"):
        HparamSearch(workload=fastgan, scheduler="pbt", perturbation_interval=0).check()


@pytest.mark.slow
def test_pbt_continues_a_weak_trial_from_a_strong_trials_checkpoint(ray_local, tmp_path, monkeypatch):
    """Two toy-GAN trials at once, perturbed after every report: Tune's PBT log records an
    exploitation, and every trial, restarted from another's checkpoint or not, ends at the last step."""
    from microforge.trainers import workload as workload_registry

    from tests.workloads.toygan import TOYGAN

    monkeypatch.setitem(workload_registry._REGISTERED, TOYGAN.name, TOYGAN)
    search = HparamSearch(workload=TOYGAN, space={"lr": {"loguniform": [1e-4, 1e-2]}}, samples=2, max_epochs=6,
                          scheduler="pbt", perturbation_interval=1, cpus_per_trial=0.45, max_concurrent=2)
    result = run_hparam_search(search, tmp_path / "tune", name="p")
    assert {t.status for t in result.trials} == {"finished"} and result.best_model is not None
    exploits = (result.experiment_dir / "pbt_global.txt").read_text().splitlines()
    assert exploits, "no trial was exploited"
    for trial in result.trials:
        _, progress = latest_checkpoint(trial.run_dir)
        assert progress["epoch"] == 5  # the last of 6 epochs, whatever the restarts
