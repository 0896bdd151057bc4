"""The cyclegan workload: a loss that falls in-process, then one 2-worker Ray Train run on an
unaligned folder, its snapshots and artifact, resume, parallel epoch scoring, and bad input."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from microforge.datasets.unaligned import UnalignedConfig, render_unaligned
from microforge.platform.cli import main
from microforge.trainers import get_workload, load_artifact, read_run
from microforge.trainers.cyclegan.data import read_unaligned_batch, render_unaligned_batch
from microforge.trainers.cyclegan.lightning import CycleGANModule
from microforge.trainers.cyclegan.workload import CycleganOptions
from microforge.trainers.lightning_import import pl
from microforge.trainers.runs import latest_checkpoint

TINY = ["--size", "64", "--width", "4", "--n-blocks", "1", "--pool-size", "4", "--batch-size", "2", "--invert-a"]


def write_folder(root: Path, train: int = 4, test: int = 2, size: int = 64) -> Path:
    config = UnalignedConfig(size=size)
    for split, n, offset in (("train", train, 0), ("test", test, 100)):
        for i in range(n):
            s = render_unaligned(config, 0, offset + i)
            for folder, image in (("A", s.a), ("A_GT", s.a_gt), ("B", cv2.cvtColor(s.b, cv2.COLOR_RGB2BGR))):
                (root / f"{split}{folder}").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / f"{split}{folder}" / f"cell{offset + i}.png"), image)
    return root


def test_options_spread_loss_weights_and_plan_checks_the_folder(tmp_path):
    options = CycleganOptions.load({"loss_weights": "gt=1,hsv=0"})
    assert (options.gt_weight, options.colorvar_weight, options.hsv_weight, options.loss_weights) == (1, 5, 0, None)
    job = get_workload("cyclegan").job({"data": str(write_folder(tmp_path / "d")), "size": 64}, epochs=1,
                                       runs_dir=tmp_path)
    assert job.data.train_samples == 4 and job.data.val_samples == 2 and job.monitor == "val_fd"
    assert job.module_config["loss_weights"] == {"gt": 5.0, "colorvar": 5.0, "hsv": 10.0}
    first = read_unaligned_batch(job.data.config, 0, [2, 3])
    assert first["a"].shape == (2, 1, 64, 64) and first["b"].shape == (2, 3, 64, 64)
    assert np.array_equal(first["a"], read_unaligned_batch(job.data.config, 0, [2, 3])["a"])
    assert set(np.unique(first["a_gt"])) <= {0.0, 1.0} and first["has_gt"].tolist() == [1.0, 1.0]


def test_generator_losses_fall_in_a_few_steps():
    torch.manual_seed(0)
    module = CycleGANModule(size=32, width=4, n_blocks=1, pool_size=4, snapshot_every=0, lr=2e-3)
    renders = [render_unaligned_batch(UnalignedConfig(size=32).to_json_dict(), 0, range(i, i + 2), invert_a=True)
               for i in (0, 2)]
    batches = DataLoader([{k: torch.from_numpy(v) for k, v in b.items()} for b in renders], batch_size=None)
    trainer = pl.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    cycles = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            cycles.append(float(trainer.callback_metrics["cycle"]))

    trainer.callbacks.append(Record())
    trainer.fit(module, train_dataloaders=batches)
    assert np.mean(cycles[-3:]) < 0.6 * np.mean(cycles[:3])


@pytest.fixture(scope="module")
def run(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("cyclegan")
    data = write_folder(root / "data")
    runs = root / "runs"
    assert main(["train", "cyclegan", "--data", str(data), *TINY, "--epochs", "1", "--workers", "2",
                 "--out", str(runs), "--name", "c"]) == 0
    return runs / "c", data


def test_two_worker_run_writes_snapshots_and_a_four_component_artifact(run):
    run_dir, _ = run
    record = read_run(run_dir)
    assert record["status"] == "finished" and record["scaling"]["num_workers"] == 2
    progress = latest_checkpoint(run_dir)[1]
    assert progress["step"] == 1  # 4 A images / 2 workers / batch 2
    for name in ("val_dice", "val_ssim", "val_hsv", "val_fd", "cycle", "gt", "colorvar", "hsv"):
        assert np.isfinite(progress[name]), name
    artifact = load_artifact(run_dir / "model")
    assert list(artifact.components) == ["generator_ab", "generator_ba", "discriminator_a", "discriminator_b"]
    assert (artifact.task, artifact.workload, artifact.preprocessing["invert_input"]) == ("colorize", "cyclegan", True)
    assert artifact["generator_ab"](torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    assert (run_dir / "epochs" / "epoch_0001" / "model.json").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


# Slow (a resumed run and a parallel scoring, ~1 min on 2 cores).
@pytest.mark.slow
def test_resume_then_score_every_epoch_in_parallel(run, capsys):
    run_dir, _ = run
    assert main(["train", "cyclegan", "--resume", str(run_dir), "--epochs", "2", "--workers", "1"]) == 0
    assert latest_checkpoint(run_dir)[1]["epoch"] == 1 and (run_dir / "epochs" / "epoch_0002").is_dir()
    capsys.readouterr()
    assert main(["eval", "cyclegan", "--run", str(run_dir), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "2 epochs on 2 test images" in printed and "(2 at once)" in printed
    report = json.loads((run_dir / "eval" / "epochs.json").read_text())
    assert [r["epoch"] for r in report["epochs"]] == [1, 2]
    assert report["best_epoch"] in (1, 2) and all(0 <= r["dice"] <= 1 for r in report["epochs"])
    # the scores are the training's own validation metrics of that epoch
    snapshot = json.loads((run_dir / "epochs" / "epoch_0002" / "model.json").read_text())
    assert report["epochs"][1]["ssim"] == pytest.approx(snapshot["metrics"]["val_ssim"], abs=1e-4)
    for name in ("scores.png", "best_epoch.png"):
        assert cv2.imread(str(run_dir / "eval" / name)) is not None
    assert list(load_artifact(run_dir / "eval" / "model").components)[0] == "generator_ab"


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"

    def fails(data_change, message, *extra):
        data = write_folder(tmp_path / f"d{len(list(tmp_path.iterdir()))}", train=2, test=0)
        data_change(data)
        assert main(["train", "cyclegan", "--data", str(data), *TINY, *extra, "--out", str(runs)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not runs.exists()

    import shutil

    fails(lambda d: shutil.rmtree(d / "trainB"), "no trainB/ folder")
    fails(lambda d: (d / "trainA" / "cell1.png").unlink(), "trainA_GT/cell1.png: GT file without a matching A image")
    fails(lambda d: cv2.imwrite(str(d / "trainB" / "cell0.png"), np.zeros((8, 8), np.uint8)),
          "trainB/cell0.png: domain B must be RGB, this image has 1 channel")
    fails(lambda d: None, "unknown loss weight 'hvs' (did you mean 'hsv'?)", "--loss-weights", "gt=5,hvs=1")
    assert main(["eval", "cyclegan", "--run", str(tmp_path / "nope")]) == 2
    assert "not a microforge run directory" in capsys.readouterr().err
