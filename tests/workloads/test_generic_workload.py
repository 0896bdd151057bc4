"""A workload that no shared file mentions goes through every layer by the public entry points.

The toy GAN (``tests/workloads/toygan.py``) is manual-optimisation and exports two components;
it is registered in this process only.
"""

import json

import numpy as np
import pytest
import torch

from microforge.platform.cli import main
from microforge.platform.errors import ConfigError
from microforge.trainers import get_workload, load_artifact, read_run, register_workload
from microforge.trainers.predict import generate_images

from tests.workloads.toygan import TOYGAN


@pytest.fixture(scope="module")
def toygan():
    return register_workload(TOYGAN)


@pytest.fixture(scope="module")
def trained(toygan, ray_local, tmp_path_factory):
    """One 2-worker CLI run: 16 blobs, batch 4 per worker -> 2 steps per epoch, 2 epochs."""
    runs = tmp_path_factory.mktemp("runs")
    code = main(["train", "toygan", "--workers", "2", "--epochs", "2", "--batch-size", "4", "--train-samples", "16",
                 "--out", str(runs), "--name", "g"])
    assert code == 0
    return runs / "g"


def test_cli_lists_and_validates_the_workload(toygan, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "toygan" in capsys.readouterr().out
    assert main(["train", "toygan", "--image-size", "8", "--out", "/nonexistent"]) == 2
    assert "image_size" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="did you mean 'toygan'"):
        get_workload("toygann")


def test_an_unpackaged_plugin_registers_through_the_environment(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "MICROFORGE_WORKLOADS": "tests.workloads.toygan:TOYGAN"}
    out = subprocess.run([sys.executable, "-m", "microforge.platform.cli", "train", "--help"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "toygan" in out.stdout and "delineation (unet)" in out.stdout
    env["MICROFORGE_WORKLOADS"] = "tests.workloads.toygan:ToyGAN"
    out = subprocess.run([sys.executable, "-m", "microforge.platform.cli", "train", "--help"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "is not a microforge Workload" in out.stderr


def test_trains_on_two_workers_with_step_cadence(trained):
    record = read_run(trained)
    assert record["status"] == "finished" and record["optimization"] == "manual"
    assert record["gradient_clip_val"] is None and record["scaling"]["num_workers"] == 2
    assert record["cadence"] == {"every": 2, "unit": "steps"}
    # 4 training steps at a cadence of 2: reports (and checkpoints) at steps 2 and 4 only.
    steps = sorted(json.loads(p.read_text())["step"] for p in trained.glob("checkpoint_*/progress.json"))
    assert steps == [2, 4] and "g_loss" in record["best_metrics"]
    assert record["epochs_completed"] == 2


def test_exports_two_components_that_load_and_generate(trained):
    card = json.loads((trained / "model" / "model.json").read_text())
    assert card["workload"] == "toygan" and card["task"] == "generate"
    assert list(card["components"]) == ["generator", "discriminator"]
    assert card["transform"] == {"name": "signed_unit", "params": {}}
    artifact = load_artifact(trained / "model")
    generator = artifact["generator"]
    assert sum(p.numel() for p in generator.parameters()) == 8 * 32 + 32 + 32 * 1024 + 1024
    images = generate_images(generator, artifact.transform, [1, 2, 1])
    assert images[0].shape == (32, 32) and images[0].dtype == np.uint8
    assert np.array_equal(images[0], images[2]) and not np.array_equal(images[0], images[1])
    fake = torch.from_numpy(artifact.transform.apply(images[0]))[None, None]
    assert artifact["discriminator"](fake).shape == (1,)


def test_two_trial_tune_search(toygan, ray_local, tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"grid": [1e-3, 3e-3]}, "train_samples": 8, "batch_size": 4}))
    code = main(["tune", "hparams", "--workload", "toygan", "--space", str(space), "--samples", "1",
                 "--max-epochs", "1", "--scheduler", "none", "--cpus-per-trial", "0.45",  # both trials at once
                 "--out", str(tmp_path / "tune"), "--name", "s"])
    assert code == 0, capsys.readouterr().err
    import pandas as pd

    results = pd.read_parquet(tmp_path / "tune" / "s" / "results.parquet")
    assert sorted(results["config/lr"]) == [1e-3, 3e-3] and set(results["status"]) == {"finished"}
    assert load_artifact(tmp_path / "tune" / "s" / "best_model").workload == "toygan"
    space.write_text(json.dumps({"lrr": 1e-3}))  # not an option of this workload
    assert main(["tune", "hparams", "--workload", "toygan", "--space", str(space), "--out", str(tmp_path)]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_batch_size_probe_of_a_manual_optimisation_workload(toygan, ray_local, state_home, capsys):
    code = main(["tune", "batch-size", "--workload", "toygan", "--presets", "tiny", "--resolution", "32",
                 "--memory-budget", "4GiB", "--max-batch", "2"])
    assert code == 0, capsys.readouterr().err
    from microforge.platform.recommendations import load_recommendations

    [record] = load_recommendations()
    assert (record.workload, record.preset, record.max_batch) == ("toygan", "tiny", 2)


def test_a_missing_or_corrupt_component_is_named(trained, tmp_path):
    import shutil

    from microforge.platform.artifact import ArtifactError

    copy = tmp_path / "model"
    shutil.copytree(trained / "model", copy)
    weights = copy / "discriminator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactError, match="component 'discriminator'.*checksum"):
        load_artifact(copy)
    weights.unlink()
    with pytest.raises(ArtifactError, match="discriminator.safetensors.*missing"):
        load_artifact(copy)


@pytest.mark.slow  # a Serve start of its own; tests/serve serves generators over HTTP by default
def test_served_by_the_generate_task_over_http(trained, ray_local, tmp_path):
    """The exported artifact, in a models directory, answers POST /generate with the bytes that
    generating locally gives."""
    import base64
    import shutil
    import socket

    import cv2
    import httpx
    from ray import serve

    from microforge.serve.app import build_app, shutdown_serve
    from microforge.serve.config import ServeConfig
    from microforge.serve.state import kill_state

    shutil.copytree(trained / "model", tmp_path / "models" / "toygan")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    no_cpu = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}
    names = ("Ingress", "SegmentationModel", "Detector", "GeneratorModel", "CrystalRenderer")
    config = ServeConfig.load({"host": "127.0.0.1", "port": port, "data_root": str(tmp_path / "data"),
                               "models_dir": str(tmp_path / "models"), "state_actor": "toygan-state",
                               "deployments": {name: no_cpu for name in names}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(config), name="toygan-test", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        listed = httpx.get(f"{url}/available_models", params={"task": "generate"}, timeout=60).json()
        assert [m["id"] for m in listed["models"]] == ["toygan"]
        reply = httpx.post(f"{url}/generate", json={"model_id": "toygan", "seeds": [1, 2, 1]}, timeout=120)
        assert reply.status_code == 200, reply.text
        served = [cv2.imdecode(np.frombuffer(base64.b64decode(item["image_b64"].split(",")[1]), np.uint8),
                               cv2.IMREAD_UNCHANGED) for item in reply.json()["images"]]
        artifact = load_artifact(trained / "model")
        local = generate_images(artifact["generator"], artifact.transform, [1, 2, 1])
        assert all(np.array_equal(a, b) for a, b in zip(served, local))
        assert [item["seed"] for item in reply.json()["images"]] == [1, 2, 1]
        bad = httpx.post(f"{url}/generate", json={"model_id": "toygan", "seeds": [-1]}, timeout=60)
        assert bad.status_code == 422 and bad.json()["ok"] is False
    finally:
        shutdown_serve()
        kill_state("toygan-state")
