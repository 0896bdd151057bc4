"""The ddpm workload: the UNet built from config, a tiny class-conditional DDPM trained on 2
workers from rendered embryo image folders whose denoising loss falls, resume, and an artifact
that diffusers alone loads."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
import pytest
import torch

from microforge.datasets.embryo.archives import write_archives
from microforge.datasets.embryo.config import load_preset
from microforge.datasets.embryo.extract import extract_archives
from microforge.datasets.embryo.image_folder import write_image_folder
from microforge.datasets.embryo.layout import PHASES
from microforge.datasets.manifest import read_manifest
from microforge.platform.cli import main
from microforge.platform.errors import ConfigError
from microforge.trainers import load_artifact, read_run
from microforge.trainers.diffusion.lightning import DDPMModule, denoising_mse, to_model_images
from microforge.trainers.diffusion.model import NULL_CLASS, make_scheduler, unet_config

TINY = ["--resolution", "32", "--width", "16", "--levels", "2", "--layers-per-block", "1"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, ray_local):
    """train and val image folders of 3 rendered 64 px videos (train: 2 videos, val: 1)."""
    root = tmp_path_factory.mktemp("embryo")
    write_archives(load_preset("tiny").model_copy(update={"size": 64}), 3, 16, root / "archives", seed=0, workers=2)
    extract_archives(root / "archives", root / "extracted", workers=2)
    (root / "split.json").write_text(json.dumps({"train": ["SYN0000", "SYN0001"], "val": ["SYN0002"], "test": []}))
    for name in ("train", "val"):
        write_image_folder(root / "extracted", root / "split.json", name, list(PHASES), root / name)
    return root


def test_unet_from_config_is_class_conditional_with_a_null_class():
    config = unet_config(32, width=16, levels=2, layers_per_block=1)
    assert config["block_out_channels"] == [16, 32] and config["num_class_embeds"] == 17 == NULL_CLASS + 1
    assert config["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D"]  # attention at 16 x 16
    module = DDPMModule(resolution=32, width=16, levels=2, layers_per_block=1, label_dropout=1.0)
    x = to_model_images(torch.rand(2, 64, 64), 32)
    assert x.shape == (2, 1, 32, 32)
    out = module.unet(x, torch.tensor([1, 2]), class_labels=torch.tensor([3, NULL_CLASS])).sample
    assert out.shape == x.shape
    assert [b.shape for b in module.unet_ema.parameters()] == [p.shape for p in module.unet.parameters()]
    assert unet_config(256)["block_out_channels"] == [64, 128, 128, 256, 256, 256]
    for bad in (lambda: unet_config(48), lambda: unet_config(32, levels=5), lambda: make_scheduler("euler", {})):
        with pytest.raises(ConfigError):
            bad()


def test_bad_input_is_one_line_exit_2(folders, tmp_path, capsys):
    for argv, message in [([], "--data is required"),
                          (["--data", str(tmp_path / "missing")], "does not exist"),
                          (["--data", str(folders / "extracted")], "")]:
        code = main(["train", "ddpm", *argv, "--steps", "1", "--out", str(tmp_path / "runs")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _train(folders, runs, *args):
    common = ["--data", str(folders / "train"), "--val-data", str(folders / "val"), *TINY, "--lr", "2e-3",
              "--warmup-steps", "0", "--workers", "2", "--batch-size", "2", "--out", str(runs)]
    assert main(["train", "ddpm", *common, *args]) == 0


def test_two_workers_loss_falls_and_diffusers_loads_the_artifact(ray_local, folders, tmp_path):
    from diffusers import DDPMScheduler, UNet2DModel

    runs = tmp_path / "runs"
    _train(folders, runs, "--steps", "20", "--every", "20", "--name", "d")
    record = read_run(runs / "d")
    assert record["status"] == "finished" and record["cadence"] == {"every": 20, "unit": "steps"}
    assert {"val_loss", "val_loss_unet", "loss"} <= set(record["best_metrics"])

    model = runs / "d" / "model"
    card = json.loads((model / "model.json").read_text())
    assert list(card["components"]) == ["unet_ema", "unet"] and card["workload"] == "ddpm"
    pre = card["preprocessing"]
    assert pre["classes"] == list(PHASES) and pre["null_class"] == 16 and "{phase}" in pre["prompt_template"]
    # diffusers alone: the EMA UNet and the scheduler, the same weights as the microforge component.
    unet = UNet2DModel.from_pretrained(model / "diffusers" / "unet").eval()
    scheduler = DDPMScheduler.from_pretrained(model / "diffusers", subfolder="scheduler")
    assert scheduler.config.num_train_timesteps == pre["scheduler"]["num_train_timesteps"]
    ours = load_artifact(model)["unet_ema"].state_dict()
    assert all(torch.equal(ours[k], v) for k, v in unet.state_dict().items())

    # The loss falls: the trained EMA UNet denoises the held-out images far better than its init.
    rows = read_manifest(folders / "val").to_pylist()
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(folders / "val" / r["image"]), np.float32))
                          for r in rows]) / 127.5 - 1
    x0, labels = to_model_images(images, 32), torch.tensor([r["phase_index"] for r in rows])
    torch.manual_seed(0)
    fresh = UNet2DModel.from_config(unet.config).eval()
    trained_loss = float(denoising_mse(unet, scheduler, x0, labels, range(len(rows))))
    fresh_loss = float(denoising_mse(fresh, scheduler, x0, labels, range(len(rows))))
    assert trained_loss < 0.5 * fresh_loss, (trained_loss, fresh_loss)
    # The run's val_loss is that metric (Ray's equal split across 2 workers drops one of the 15 images).
    assert record["best_metrics"]["val_loss"] == pytest.approx(trained_loss, rel=0.1)


@pytest.mark.slow
def test_resume_continues_the_step_count(ray_local, folders, tmp_path):
    runs = tmp_path / "runs"
    _train(folders, runs, "--steps", "10", "--every", "10", "--name", "r")
    assert main(["train", "ddpm", "--resume", "r", "--steps", "20", "--out", str(runs)]) == 0
    steps = sorted(json.loads(p.read_text())["step"] for p in (runs / "r").glob("checkpoint_*/progress.json"))
    assert steps == [10, 20] and read_run(runs / "r")["status"] == "finished"
