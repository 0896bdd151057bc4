"""The dreambooth workload on a tiny local Stable Diffusion pipeline: bad --pretrained refused before
anything is written, the original's defaults, a 2-worker run with prior preservation whose UNet
learns the instance images (text encoder and VAE untouched) and whose artifact diffusers alone
loads, class images drawn once and reused by a second run; the text encoder trains only with
--train-text-encoder, and checkpoints leave the frozen parts out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import torch

from microforge.datasets.embryo.archives import write_archives
from microforge.datasets.embryo.config import load_preset
from microforge.datasets.embryo.extract import extract_archives
from microforge.datasets.embryo.image_folder import write_image_folder
from microforge.datasets.embryo.layout import PHASE_INDEX, PROMPT_TEMPLATE, phase_prompt
from microforge.datasets.manifest import read_manifest
from microforge.platform.cli import main
from microforge.trainers import get_workload, load_artifact, read_run
from microforge.trainers.diffusion.class_images import CLASS_DIR, RECORD_FILE
from microforge.trainers.diffusion.dreambooth import CLASS_RECORD, DreamBoothModule
from microforge.trainers.diffusion.lightning import to_model_images
from microforge.trainers.diffusion.pipeline import class_prompt_of, encode_prompts, load_pipeline_parts
from tests.trainers.tiny_sd import save_tiny_pipeline

TINY = ["--resolution", "32", "--lr", "1e-3"]
CLASS = ["--prior-preservation", "--class-images", "4", "--class-steps", "2", "--class-batch-size", "2"]


@pytest.fixture(scope="module")
def embryo(tmp_path_factory, ray_local):
    """A rendered embryo image folder (3 videos: 3 t2 images) and a tiny local pipeline."""
    root = tmp_path_factory.mktemp("dreambooth")
    write_archives(load_preset("tiny").model_copy(update={"size": 64}), 3, 16, root / "archives", seed=0, workers=2)
    extract_archives(root / "archives", root / "extracted", workers=2)
    (root / "split.json").write_text(json.dumps({"train": ["SYN0000", "SYN0001", "SYN0002"], "val": [], "test": []}))
    write_image_folder(root / "extracted", root / "split.json", "train", ["t2", "t4"], root / "folder")
    save_tiny_pipeline(root / "pipeline")
    return root


def _train(embryo, runs, *args):
    return main(["train", "dreambooth", "--pretrained", str(embryo / "pipeline"), "--data", str(embryo / "folder"),
                 "--phase", "t2", "--out", str(runs), *TINY, *args])


@pytest.mark.parametrize("pretrained, message", [
    ("missing", "does not exist"),
    ("not-a-pipeline", "is not a diffusers pipeline directory: it has no model_index.json"),
    ("partial", "is not a Stable Diffusion pipeline (StableDiffusionPipeline): missing unet"),
    ("stabilityai/stable-diffusion-2-1-base", "looks like a hub id: microforge never downloads models"),
])
def test_bad_pretrained_is_one_line_exit_2_nothing_written(embryo, tmp_path, monkeypatch, capsys, pretrained,
                                                           message):
    monkeypatch.chdir(tmp_path)  # the hub id is resolved against the working directory: nothing there
    (tmp_path / "not-a-pipeline").mkdir()
    (tmp_path / "not-a-pipeline" / "unet").mkdir()
    (tmp_path / "partial").mkdir()
    index = json.loads((embryo / "pipeline" / "model_index.json").read_text())
    (tmp_path / "partial" / "model_index.json").write_text(json.dumps(index))
    runs = tmp_path / "runs"
    code = main(["train", "dreambooth", "--pretrained", pretrained, "--data", str(embryo / "folder"), "--phase", "t2",
                 "--steps", "1", "--out", str(runs)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not runs.exists()


def test_defaults_and_one_prompt_template_for_captions_and_prompts(embryo, tmp_path, capsys):
    workload = get_workload("dreambooth")
    options = {"pretrained": str(embryo / "pipeline"), "data": str(embryo / "folder"), "phase": "t2"}
    job = workload.job(options, epochs=1, runs_dir=tmp_path)
    config = job.module_config
    # The original's defaults: 512 px, batch 1, lr 7e-6; UNet only; no prior preservation unless asked.
    assert (config["resolution"], job.batch_size, config["lr"]) == (512, 1, 7e-6)
    assert not config["train_text_encoder"] and not config["prior_preservation"] and config["class_images"] == 200
    # The instance prompt is the folder's caption of a t2 image; the class prompt is that template less its phase.
    rows = [r for r in read_manifest(embryo / "folder").to_pylist() if r["phase"] == "t2"]
    caption = (embryo / "folder" / rows[0]["description"]).read_text().strip()
    assert config["instance_prompt"] == caption == phase_prompt("t2") == PROMPT_TEMPLATE.format(phase="t2")
    assert config["class_prompt"] == class_prompt_of(PROMPT_TEMPLATE)
    assert config["class_prompt"] == "a grayscale microscopic image of a human embryo"
    assert job.data.rows_per_worker("train", 1) == len(rows) == 3
    for bad, message in [({"phase": "t22"}, "unknown phase 't22'"), ({"phase": "t3"}, "no images of phase t3"),
                         ({"resolution": 36}, "multiple of 8"), ({"data": str(embryo / "extracted")}, "")]:
        code = main(["train", "dreambooth", *[x for k, v in {**options, **bad}.items()
                                              for x in (f"--{k}", str(v))], "--out", str(tmp_path / "runs")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def _instance_mse(pipeline_dir: Path, images: torch.Tensor, prompt: str) -> float:
    """The UNet's noise-prediction MSE on the latents of ``images`` at fixed timesteps and seeded
    noise (the same number for the same weights)."""
    from diffusers import DDPMScheduler

    parts = load_pipeline_parts(pipeline_dir)
    noise_schedule = DDPMScheduler.from_config(parts.scheduler_config)
    with torch.no_grad():
        latents = parts.vae.encode(images.expand(-1, 3, -1, -1)).latent_dist.mean * parts.vae.config.scaling_factor
        states = encode_prompts(parts.tokenizer, parts.text_encoder, [prompt] * len(images))
        losses = []
        for t in (50, 200, 400, 600, 800, 950):
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(t))
            tt = torch.full((len(images),), t)
            pred = parts.unet(noise_schedule.add_noise(latents, noise, tt), tt, encoder_hidden_states=states).sample
            losses.append(torch.nn.functional.mse_loss(pred, noise))
    return float(torch.stack(losses).mean())


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_workers_prior_preservation_learns_the_instances(embryo, tmp_path):
    from diffusers import StableDiffusionPipeline

    runs = tmp_path / "runs"
    assert _train(embryo, runs, *CLASS, "--steps", "16", "--every", "16", "--workers", "2", "--name", "a") == 0
    record = read_run(runs / "a")
    assert record["status"] == "finished" and record["batch_size"] == 1  # the "original" recipe's batch
    assert {"loss", "instance_loss", "prior_loss"} <= set(record["best_metrics"])
    assert record["best_metrics"]["step"] == 16  # the last checkpoint is exported

    # Class images: drawn by the frozen pipeline into <runs>/class-images/<key>/, 32 px gray.
    drawn = json.loads((runs / "a" / CLASS_RECORD).read_text())
    assert (drawn["generated"], drawn["reused"], drawn["count"]) == (4, 0, 4)
    assert drawn["prompt"] == class_prompt_of(PROMPT_TEMPLATE)
    class_dir = Path(drawn["directory"])
    assert class_dir.parent == runs / CLASS_DIR and (class_dir / RECORD_FILE).is_file()
    pngs = sorted((class_dir / "images").glob("*.png"))
    assert len(pngs) == 4 and np.asarray(Image.open(pngs[0])).shape == (32, 32)

    # The artifact: the fine-tuned pipeline in diffusers' format, loadable by diffusers alone.
    model = runs / "a" / "model"
    card = json.loads((model / "model.json").read_text())
    assert card["workload"] == "dreambooth" and list(card["components"]) == ["unet"]
    pre = card["preprocessing"]
    assert pre["classes"] == ["t2"] and pre["instance_prompt"] == phase_prompt("t2") and pre["class_images"] == 4
    tuned = StableDiffusionPipeline.from_pretrained(model / "diffusers")
    base = StableDiffusionPipeline.from_pretrained(embryo / "pipeline")
    assert _same(_state(tuned.text_encoder), _state(base.text_encoder))  # frozen without --train-text-encoder
    assert _same(_state(tuned.vae), _state(base.vae))
    assert not _same(_state(tuned.unet), _state(base.unet))
    assert _same(_state(load_artifact(model)["unet"]), _state(tuned.unet))

    # The UNet learnt the t2 images: their denoising error fell well below the pretrained UNet's.
    rows = [r for r in read_manifest(embryo / "folder").to_pylist() if r["phase_index"] == PHASE_INDEX["t2"]]
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(embryo / "folder" / r["image"]).convert("L"),
                                                      np.float32)) for r in rows]) / 127.5 - 1
    x = to_model_images(images, 32)
    before, after = _instance_mse(embryo / "pipeline", x, phase_prompt("t2")), _instance_mse(
        model / "diffusers", x, phase_prompt("t2"))
    assert after < 0.7 * before, (before, after)


@pytest.mark.slow
def test_a_second_run_reuses_the_class_images_untouched(embryo, tmp_path):
    runs = tmp_path / "runs"
    assert _train(embryo, runs, *CLASS, "--steps", "1", "--every", "1", "--name", "a") == 0
    drawn = json.loads((runs / "a" / CLASS_RECORD).read_text())
    class_dir = Path(drawn["directory"])
    stamps = {p.name: p.stat().st_mtime_ns for p in (class_dir / "images").glob("*.png")}
    assert drawn["generated"] == 4 and len(stamps) == 4
    # A second run with the same pipeline, prompt and count reuses the class images, untouched.
    assert _train(embryo, runs, *CLASS, "--steps", "1", "--every", "1", "--name", "b") == 0
    again = json.loads((runs / "b" / CLASS_RECORD).read_text())
    assert (again["generated"], again["reused"], again["directory"]) == (0, 4, str(class_dir))
    assert {p.name: p.stat().st_mtime_ns for p in (class_dir / "images").glob("*.png")} == stamps
    assert len(list((runs / CLASS_DIR).iterdir())) == 1


def _module(embryo, **kwargs) -> DreamBoothModule:
    return DreamBoothModule(pretrained=str(embryo / "pipeline"), phase="t2", instance_prompt=phase_prompt("t2"),
                            class_prompt=class_prompt_of(PROMPT_TEMPLATE), prompt_template=PROMPT_TEMPLATE,
                            resolution=32, **kwargs)


@pytest.mark.parametrize("train_text_encoder", [False, True])
def test_the_unet_trains_and_the_text_encoder_only_when_asked(embryo, train_text_encoder):
    module = _module(embryo, train_text_encoder=train_text_encoder)
    module.training_step(module.example_batch(2), 0).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.unet.parameters())
    assert all(p.grad is None for p in module.vae.parameters())
    assert any(p.grad is not None for p in module.text_encoder.parameters()) == train_text_encoder
    trained = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert {id(p) for p in module.text_encoder.parameters()} <= trained or not train_text_encoder
    assert not {id(p) for p in module.vae.parameters()} & trained
    # Checkpoints leave out the frozen parts; loading one takes them from the pretrained pipeline again.
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    kept = {k.split(".")[0] for k in checkpoint["state_dict"]}
    assert kept == ({"unet", "text_encoder"} if train_text_encoder else {"unet"})
    fresh = _module(embryo, train_text_encoder=train_text_encoder)
    fresh.load_state_dict(checkpoint["state_dict"])  # strict
    assert _same(_state(fresh.unet), _state(module.unet)) and _same(_state(fresh.vae), _state(module.vae))


@pytest.mark.slow
def test_train_text_encoder_from_the_cli_changes_it(embryo, tmp_path):
    from diffusers import StableDiffusionPipeline

    runs = tmp_path / "runs"
    assert _train(embryo, runs, "--train-text-encoder", "--steps", "3", "--every", "3", "--name", "t") == 0
    tuned = StableDiffusionPipeline.from_pretrained(runs / "t" / "model" / "diffusers")
    base = StableDiffusionPipeline.from_pretrained(embryo / "pipeline")
    assert not _same(_state(tuned.text_encoder), _state(base.text_encoder))
    assert _same(_state(tuned.vae), _state(base.vae))
    assert not (runs / "t" / CLASS_RECORD).exists() and not (runs / CLASS_DIR).exists()  # no prior preservation
    checkpoint = torch.load(next((runs / "t").glob("checkpoint_*/checkpoint.ckpt")), map_location="cpu",
                            weights_only=False)
    assert not any(k.startswith("vae.") for k in checkpoint["state_dict"])
    assert any(k.startswith("text_encoder.") for k in checkpoint["state_dict"])


@pytest.mark.slow
def test_resume_continues_the_step_count(embryo, tmp_path):
    runs = tmp_path / "runs"
    assert _train(embryo, runs, *CLASS, "--steps", "2", "--every", "2", "--name", "r") == 0
    assert main(["train", "dreambooth", "--resume", "r", "--steps", "4", "--out", str(runs)]) == 0
    steps = sorted(json.loads(p.read_text())["step"] for p in (runs / "r").glob("checkpoint_*/progress.json"))
    assert steps == [2, 4] and read_run(runs / "r")["status"] == "finished"
    assert json.loads((runs / "r" / CLASS_RECORD).read_text())["generated"] == 0  # the resumed run reused them
