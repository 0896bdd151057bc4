"""Serve fixtures: one microforge application on the session's local Ray per test module."""

from __future__ import annotations

import re
import socket
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

TOKEN = "test-token-123"
ALLOWED_ORIGIN = "http://allowed.example"


def wait_healthy(url: str, seconds: float = 60) -> None:
    """Wait until the application at ``url`` answers ``/health`` with 200."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test application at {url} did not become healthy")
        time.sleep(0.5)


def shutdown_noise(output: str) -> list[str]:
    """The lines of a server's output after "received SIG...; shutting down" that a user would take
    for a failure (Ray's "(raylet) Task ... failed" included)."""
    assert "; shutting down" in output, output[-4000:]
    tail = output.split("; shutting down", 1)[1]
    return [line for line in tail.splitlines()
            if re.search(r"\(raylet\)|error|fail|traceback|exception", line, re.IGNORECASE)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LEGACY_UNET = Path(__file__).resolve().parents[1] / "data" / "legacy-unet-v1"
LEGACY_LOGITS = LEGACY_UNET.with_name("legacy-unet-v1-logits.npy")


def save_unet(directory: Path, threshold: float = 0.0, seed: int = 0) -> None:
    """A tiny, untrained U-Net artifact (format 2, task ``segment``)."""
    import torch

    from microforge.platform.artifact import ComponentWeights, save_artifact
    from microforge.trainers.unet import unet_from_preset

    torch.manual_seed(seed)
    model = unet_from_preset("tiny")
    save_artifact(directory, {"model": ComponentWeights("microforge.trainers.unet.model:AttentionUNet", model.config,
                                                        model.state_dict())},
                  workload="delineation", task="segment", transform={"name": "unit_range", "params": {}},
                  preprocessing={"channels": 1, "image_size": 64, "size_multiple": 8, "threshold": threshold},
                  metrics={"dice": 0.5}, provenance={"test": True})


def save_colorizer(directory: Path, invert_a: bool = True, width: int = 4, seed: int = 0) -> None:
    """A tiny, untrained CycleGAN artifact (task ``colorize``): the ``cyclegan`` workload's four
    components at width ``width`` with one residual block, its transform, and the preprocessing
    ``CycleGANModule.export_preprocessing`` records (built from the plain-torch networks, so the
    fixture does not import Lightning)."""
    import torch

    from microforge.platform.artifact import ComponentWeights, save_artifact
    from microforge.platform.imports import object_path
    from microforge.trainers.cyclegan.model import NLayerDiscriminator, ResnetGenerator, init_weights
    from microforge.trainers.cyclegan.workload import CYCLEGAN

    torch.manual_seed(seed)
    parts = {"generator_ab": ResnetGenerator(1, 3, width, 1), "generator_ba": ResnetGenerator(3, 1, width, 1),
             "discriminator_a": NLayerDiscriminator(1, width), "discriminator_b": NLayerDiscriminator(3, width)}
    for part in parts.values():
        init_weights(part)
    assert tuple(parts) == CYCLEGAN.components
    save_artifact(directory, {name: ComponentWeights(object_path(type(part)), part.config, part.state_dict())
                              for name, part in parts.items()},
                  workload=CYCLEGAN.name, task=CYCLEGAN.serve_task, transform=dict(CYCLEGAN.transform),
                  preprocessing={"image_size": 32, "size_multiple": 4, "input": "grayscale (1 channel), domain A",
                                 "invert_input": invert_a, "output": "RGB in [-1, 1] (generator_ab)",
                                 "gt_threshold": 0.5},
                  metrics={"val_fd": 1.0}, provenance={"test": True})


CRYSTAL_DETECTOR = "crystals/tiny"


def save_crystal_detector(directory: Path, seed: int = 0, heatmap_bias: float = 1.0) -> None:
    """A tiny, untrained ``crystals`` detector artifact (task ``detect``). Its heatmap bias is
    raised so that it reports boxes (the trained prior, sigmoid(-2.19) = 0.1, is near the
    decoder's threshold): an output to compare, not a good detector."""
    import torch

    from microforge.platform.artifact import ComponentWeights, save_artifact
    from microforge.platform.imports import object_path
    from microforge.trainers.detector import detector_from_preset
    from microforge.trainers.detector.workload import CRYSTALS

    torch.manual_seed(seed)
    model = detector_from_preset("tiny")
    with torch.no_grad():
        model.heads["heatmap"][-1].bias.fill_(heatmap_bias)
    save_artifact(directory, {"model": ComponentWeights(object_path(type(model)), model.config, model.state_dict())},
                  workload=CRYSTALS.name, task=CRYSTALS.serve_task, transform=dict(CRYSTALS.transform),
                  preprocessing={"image_size": 64, "size_multiple": model.size_multiple}, metrics={"val_ap50": 0.0},
                  provenance={"test": True})


def make_models_dir(models: Path) -> None:
    """The legacy (format 1) U-Net, a tiny U-Net artifact (the newest segmentation model), a tiny
    generator, a tiny CycleGAN colorizer (trained on inverted A), a tiny crystal detector, a
    working plugin and a broken one."""
    import os
    import shutil

    from .tiny_generator import save_tiny_generator

    shutil.copytree(LEGACY_UNET, models / "legacy-unet-v1")
    os.utime(models / "legacy-unet-v1" / "model.json", (1_000_000_000, 1_000_000_000))  # older than unet-tiny
    save_tiny_generator(models / "gan" / "tiny")
    save_colorizer(models / "cyclegan" / "tiny")
    save_unet(models / "unet-tiny")
    save_crystal_detector(models / CRYSTAL_DETECTOR)
    (models / "plugins" / "fixed-rod").mkdir(parents=True)
    (models / "plugins" / "fixed-rod" / "model.py").write_text(textwrap.dedent("""
        def load():
            return {"length": 20.0}

        def infer(model, image):
            return [{"x": 10, "y": 12, "w": model["length"], "h": 4, "angle": 0.5, "confidence": 0.9, "class": "rod"}]
    """))
    (models / "plugins" / "broken").mkdir(parents=True)
    (models / "plugins" / "broken" / "model.py").write_text(
        "def infer(model, image):\n    raise RuntimeError('boom')\n")


@dataclass
class ServeApp:
    url: str
    port: int
    data_root: Path
    models_dir: Path
    app_name: str
    state_actor: str
    headers: dict
    token: str = TOKEN
    allowed_origin: str = ALLOWED_ORIGIN

    @property
    def ws_url(self) -> str:
        """The live WebSocket, with the token (a browser cannot set headers on a WebSocket)."""
        return f"ws://127.0.0.1:{self.port}/ws/live?token={self.token}"


def app_config(tmp: Path, port: int, state_actor: str):
    from microforge.serve.config import ServeConfig

    no_cpu = {"ray_actor_options": {"num_cpus": 0}}
    return ServeConfig.load({
        "host": "127.0.0.1", "port": port,
        "data_root": str(tmp / "data"), "models_dir": str(tmp / "models"),
        "cors_origins": [ALLOWED_ORIGIN], "state_actor": state_actor, "api_token": TOKEN,
        "synth_workers": 1, "timelapse_workers": 1,
        # The untrained crystal detector above would otherwise be the default (the newest detector
        # artifact); the tests that use the default detector expect the contour detector's boxes.
        "default_models": {"detect": "builtin:contours"},
        "limits": {"max_upload_bytes": 2 << 20, "max_request_bytes": 8 << 20, "max_folder_files": 20,
                   "max_image_side": 1024, "max_image_pixels": 1024 * 1024, "max_preview_pixels": 512 * 512,
                   "max_bulk_rows": 8, "max_batch_images": 200, "max_generate_images": 16,
                   "max_generate_bytes": 1024,  # 16 8-bit or 8 16-bit 8x8 tiny-generator images
                   "max_live_clients": 4},
        "deployments": {
            "Ingress": {"num_replicas": 2, **no_cpu},
            # A long batch wait makes concurrent requests reliably share a batch on a busy machine.
            "SegmentationModel": {"num_replicas": 2, "max_batch_size": 8, "batch_wait_timeout_s": 0.25, **no_cpu},
            "Detector": {"num_replicas": 1, **no_cpu},
            "GeneratorModel": {"num_replicas": 1, "max_batch_size": 8, "batch_wait_timeout_s": 0.05, **no_cpu},
            "ColorizerModel": {"num_replicas": 1, "max_batch_size": 4, "batch_wait_timeout_s": 0.25, **no_cpu},
            "CrystalRenderer": {"num_replicas": 2, **no_cpu},
        },
    })


@pytest.fixture(scope="module")
def serve_app(ray_local, tmp_path_factory):
    """The whole application on 127.0.0.1:<free port>, shut down after the module."""
    from ray import serve

    from microforge.serve.app import build_app, shutdown_serve
    from microforge.serve.state import kill_state

    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "models").mkdir()
    make_models_dir(tmp / "models")
    port = free_port()
    app_name = "microforge-test"
    state_actor = f"state-{uuid.uuid4().hex[:8]}"
    config = app_config(tmp, port, state_actor)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(config), name=app_name, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        yield ServeApp(url, port, (tmp / "data").resolve(), (tmp / "models").resolve(), app_name, state_actor,
                       {"Authorization": f"Bearer {TOKEN}"})
    finally:
        shutdown_serve()
        kill_state(state_actor)



@pytest.fixture()
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_port()
