"""The fastgan workload: EMA with buffers, and one 2-worker run on rendered CARS images that
exports the three components and generates from the EMA generator."""

import json

import numpy as np
from PIL import Image
import pytest
import torch

from microforge.platform.cli import main
from microforge.trainers import get_workload, load_artifact, read_run
from microforge.trainers.fastgan.lightning import FastGANModule, ema_update
from microforge.trainers.predict import generate_images


def test_ema_averages_parameters_and_copies_buffers():
    module = FastGANModule(width=8)
    ema, model = module.generator_ema, module.generator
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        for name, b in model.named_buffers():
            if "running_mean" in name:
                b.fill_(3.0)
    before = [p.clone() for p in ema.parameters()]
    ema_update(ema, model, decay=0.9)
    for old, new, source in zip(before, ema.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * source)
    for (name, b), (_, source) in zip(ema.named_buffers(), model.named_buffers()):
        assert torch.equal(b, source), name
    assert not any(p.requires_grad for p in ema.parameters())


def test_options_and_bad_input(capsys):
    workload = get_workload("fastgan")
    assert workload.optimization == "manual" and workload.serve_task == "generate"
    job = workload.job({"size": "small", "resolution": 512}, epochs=1, runs_dir=".")
    assert job.module_config["size"] == "small" and job.data.config["size"] == 512
    with pytest.raises(SystemExit):
        main(["train", "fastgan", "--resolution", "300"])
    assert "invalid choice: '300'; valid: 256, 512, 1024" in capsys.readouterr().err
    assert main(["train", "fastgan", "--synth", "cars:dense_", "--out", "/nonexistent"]) == 2
    assert "did you mean 'dense'" in capsys.readouterr().err
    for args, message in [(["--channels", "3"], "3-channel FastGAN cannot train on the 1-channel images"),
                          (["--train-samples", "4", "--batch-size", "8"], "fewer than one batch of 8"),
                          (["--size", "hugee"], "invalid choice: 'hugee'"),
                          (["--preset", "improve"], "invalid choice: 'improve'")]:
        try:
            code = main(["train", "fastgan", "--out", "/nonexistent/runs", *args])
        except SystemExit as exc:  # argparse refuses choices itself
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) <= 2, (args, err)


def test_two_worker_run_exports_three_components_that_generate(ray_local, tmp_path):
    runs = tmp_path / "runs"
    assert main(["train", "fastgan", "--width", "8", "--train-samples", "4", "--val-samples", "2", "--epochs", "1",
                 "--workers", "2", "--batch-size", "2", "--out", str(runs), "--name", "g"]) == 0
    record = read_run(runs / "g")
    assert record["status"] == "finished" and record["optimization"] == "manual"
    assert np.isfinite(record["best_metrics"]["val_fd"]) and "d_recon" in record["best_metrics"]
    card = json.loads((runs / "g" / "model" / "model.json").read_text())
    assert list(card["components"]) == ["generator_ema", "generator", "discriminator"]
    artifact = load_artifact(runs / "g" / "model")
    images = generate_images(artifact["generator_ema"], artifact.transform, [3, 4, 3], dtype=np.uint16)
    assert images[0].shape == (256, 256) and images[0].dtype == np.uint16
    assert np.array_equal(images[0], images[2]) and not np.array_equal(images[0], images[1])


# Slow (two launches, ~2 min on 2 cores): the step clock runs by default in tests/workloads (toy GAN).
@pytest.mark.slow
def test_step_cadence_samples_and_resume(ray_local, tmp_path):
    """--steps/--every: reports with fresh val_fd at the cadence and at the stop, EMA sample grids
    as PNG and TensorBoard images, and a resumed run that continues the step count."""
    runs = tmp_path / "runs"
    common = ["--out", str(runs), "--batch-size", "1"]
    assert main(["train", "fastgan", "--width", "8", "--train-samples", "2", "--val-samples", "2",
                 "--fm-weight", "1", "--penalty", "wgan-gp", "--penalty-weight", "1", "--steps", "2",
                 "--every", "2", "--name", "s", *common]) == 0
    record = read_run(runs / "s")
    assert record["max_steps"] == 2 and record["cadence"] == {"every": 2, "unit": "steps"}
    assert {"g_feature_matching", "d_penalty", "val_fd"} <= set(record["best_metrics"])
    assert main(["train", "fastgan", "--resume", "s", "--steps", "3", *common]) == 0
    steps = sorted(json.loads(p.read_text())["step"] for p in (runs / "s").glob("checkpoint_*/progress.json"))
    assert steps[-2:] == [2, 3]
    samples = sorted(p.name for p in (runs / "s" / "samples").iterdir())
    assert samples == ["step_0000002.png", "step_0000003.png"]
    grid = np.asarray(Image.open(runs / "s" / "samples" / samples[0]))
    assert grid.shape == (4 * 256, 4 * 256) and grid.std() > 0
    events = list((runs / "s" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and any(b"samples/ema" in p.read_bytes() for p in events)
