"""U-Net training: the LightningModule alone, then a 2-worker Ray Train run, its artifact and resume."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from microforge.datasets.blobs import render_blob_batch
from microforge.platform.artifact import read_card
from microforge.platform.cli import main
from microforge.platform.errors import ConfigError
from microforge.trainers import EpochBatches, latest_checkpoint, load_model, read_run
from microforge.trainers.unet.lightning import UNetModule

TRAIN_ARGS = ["train", "delineation", "--preset", "tiny", "--size", "32", "--train-samples", "32", "--val-samples", "16",
              "--batch-size", "8", "--name", "t"]


def blob_batches(n_batches, size=32, batch=4, seed=0):
    """What the launcher hands Lightning: an iterable of dict batches, re-opened each epoch."""
    out = []
    for b in range(n_batches):
        arrays = render_blob_batch({"size": size}, seed, range(b * batch, (b + 1) * batch))
        out.append({k: torch.from_numpy(v) for k, v in arrays.items()})
    return EpochBatches(lambda: iter(out), n_batches)


def test_module_rejects_a_size_the_network_cannot_take():
    with pytest.raises(ConfigError, match="multiple of 8"):
        UNetModule(preset="tiny", image_size=36)
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        UNetModule(preset="tiny_")


def test_module_trains_with_schedules_and_logs_every_metric_without_ray(tmp_path):
    import pytorch_lightning as pl

    module = UNetModule(preset="tiny", image_size=32, boundary_samples=3)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=blob_batches(2), val_dataloaders=blob_batches(2, seed=1))
    metrics = trainer.callback_metrics
    for name in ("val_dice", "val_iou", "val_clean_dice", "val_hd95", "val_boundary_f1", "val_loss", "train_loss"):
        assert name in metrics and torch.isfinite(metrics[name]), name
    assert 0.0 <= float(metrics["val_dice"]) <= 1.0
    # last epoch of 4: BCE weight 0.5, boundary weight 0.5, extreme curriculum phase
    assert (module.loss.alpha, module.loss.beta, module.loss.gamma) == (1.0, 0.5, 0.5)
    assert float(metrics["noise_scale"]) == pytest.approx(1.0)
    # warm-up then cosine down to lr * min_lr_ratio over the 8 optimizer steps
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4 * 0.01, rel=1e-3)


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    """One 2-worker epoch through the CLI, on the session's 2-CPU Ray."""
    runs = tmp_path_factory.mktemp("unet") / "runs"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*TRAIN_ARGS, "--epochs", "1", "--workers", "2", "--out", str(runs)])
    assert code == 0
    return runs / "t", out.getvalue()


def test_two_worker_run_writes_checkpoints_logs_and_artifact(trained):
    run_dir, printed = trained
    assert f"run: {run_dir}" in printed
    assert f"artifact: {run_dir / 'model'}" in printed
    record = read_run(run_dir)
    assert record["status"] == "finished" and record["epochs_completed"] == 1
    assert record["scaling"]["num_workers"] == 2
    assert record["resources_per_worker"] == {"CPU": 0.5}  # one CPU of two left to synthesis
    checkpoint, progress = latest_checkpoint(run_dir)
    assert (checkpoint / "checkpoint.ckpt").is_file()
    assert progress["epoch"] == 0 and progress["step"] == 2  # 32 samples / 2 workers / batch 8
    for name in ("val_dice", "val_clean_dice", "val_iou", "val_hd95", "val_boundary_f1", "val_ood_dice", "train_loss"):
        assert np.isfinite(progress[name]), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_artifact_rebuilds_the_trained_model(trained):
    run_dir, _ = trained
    card = read_card(run_dir / "model")
    assert (card.workload, card.task, card.transform["name"]) == ("delineation", "segment", "unit_range")
    assert card.components["model"].cls == "microforge.trainers.unet.model:AttentionUNet"
    assert card.preprocessing["size_multiple"] == 8 and card.preprocessing["image_size"] == 32
    assert card.preprocessing["scale"]["image_size"] == 32 and card.preprocessing["scale"]["dot_radius_px"] > 0
    assert card.provenance["data"]["seed"] == 0 and card.provenance["options"]["image_size"] == 32
    assert "val_dice" in card.metrics

    state = torch.load(run_dir / card.provenance["checkpoint"] / "checkpoint.ckpt", weights_only=False)
    module = UNetModule(**state["hyper_parameters"])
    module.load_state_dict(state["state_dict"])
    model = load_model(run_dir / "model")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), module.model.eval()(x))


def test_resume_continues_from_the_latest_checkpoint(trained, capsys):
    run_dir, _ = trained
    first = latest_checkpoint(run_dir)[0]
    # the old name of the workload still works on the command line
    assert main(["train", "unet", "--resume", str(run_dir), "--epochs", "2", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "epochs: 2" in printed
    checkpoint, progress = latest_checkpoint(run_dir)
    assert checkpoint != first and first.is_dir()
    # one epoch more, on 1 worker: 4 steps of 8 samples after the 2 of the first epoch
    assert progress["epoch"] == 1 and progress["step"] == 6
    state = torch.load(checkpoint / "checkpoint.ckpt", weights_only=False)
    assert state["epoch"] == 1
    record = read_run(run_dir)
    assert record["epochs_completed"] == 2 and record["epochs"] == 2 and record["created"]
    assert json.loads((run_dir / "model" / "model.json").read_text())["provenance"]["epochs"] == 2
