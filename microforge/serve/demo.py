"""``microforge demo``: render a small crystal dataset, train a tiny U-Net for about a minute (or
reuse the last demo model), and serve both with the web GUI, all on an embedded local Ray.

Everything lives under ``<state dir>/demo/``::

    data/                       the server's data root (uploads, presets, outputs)
      datasets/demo-crystals/   the rendered crystal dataset
    models/demo-unet/           the demo U-Net artifact (reused by the next ``microforge demo``)
    runs/                       the U-Net training runs (the newest few are kept)

Ctrl-C (or SIGTERM) in any phase stops everything: Serve, the training, and the Ray it started.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from microforge.platform.errors import ConfigError
from microforge.platform.storage import state_dir

log = logging.getLogger(__name__)

DEMO_DIR = "demo"
DATASET_NAME = "demo-crystals"
MODEL_NAME = "demo-unet"
STATE_ACTOR = "microforge-demo-state"
CRYSTAL_PRESET = "default"
UNET_PRESET = "tiny"
UNET_SIZE = 64  # small images: several epochs fit in a minute on a laptop CPU
TRAIN_SAMPLES = 128  # blobs per epoch
VAL_SAMPLES = 32
# 100x the training default: the demo has a minute, not hours. Measured on 2 busy CPU cores: about
# 7 epochs in 60 s reach val Dice ~0.91 (at 1e-4 or 3e-3 the masks stay empty after a minute).
LEARNING_RATE = 1e-2
SECONDS_PER_EPOCH = 9.0  # rough CPU time of one epoch above (2 cores), to size the LR schedule
RUNS_KEPT = 3
# Wider recipe + random rescaling: the served demo model should hold on uploads that are not
# its own renders (its card records the scale it works at; /predict resizes to it).
BLOB_PRESET = "robust"


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def dataset(self) -> Path:
        return self.data_root / "datasets" / DATASET_NAME

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def model(self) -> Path:
        return self.models_dir / MODEL_NAME

    @property
    def runs(self) -> Path:
        return self.root / "runs"


def demo_paths() -> DemoPaths:
    return DemoPaths(state_dir() / DEMO_DIR)


def render_dataset(paths: DemoPaths, images: int) -> str:
    """Render (or complete) the demo crystal dataset; returns a one-line summary."""
    from microforge.datasets.crystals import generate_dataset, load_preset

    summary = generate_dataset(load_preset(CRYSTAL_PRESET), images, paths.dataset, seed=0)
    if summary.rendered:
        return (f"{summary.n} crystal images in {paths.dataset} ({summary.rendered} rendered in "
                f"{summary.seconds:.1f} s, {summary.reused} reused)")
    return f"{summary.n} crystal images in {paths.dataset} (reused)"


def demo_model_ready(paths: DemoPaths) -> bool:
    """Whether a complete, verified demo U-Net is there."""
    from microforge.platform.artifact import ArtifactError, read_artifact

    if not paths.model.exists():
        return False
    try:
        read_artifact(paths.model)
        return True
    except ArtifactError as exc:
        log.warning("the last demo model cannot be used (%s); training a new one", exc)
        return False


def train_model(paths: DemoPaths, seconds: float) -> str:
    """Train the tiny U-Net on the ``robust`` blob recipe with the ``train delineation`` code
    path for about ``seconds`` and export it straight to ``models/demo-unet``; returns a
    one-line summary."""
    from microforge.trainers.cli import default_batch_size
    from microforge.trainers.launcher import launch
    from microforge.trainers.workload import get_workload

    # The epoch count sizes the learning-rate schedule and the curriculum; Lightning's max_time
    # stops the run once the budget is spent, whichever comes first.
    epochs = max(2, round(seconds / SECONDS_PER_EPOCH))
    workload = get_workload("delineation")
    job = workload.job(
        {"preset": UNET_PRESET, "image_size": UNET_SIZE, "train_samples": TRAIN_SAMPLES,
         "val_samples": VAL_SAMPLES, "lr": LEARNING_RATE, "blob_preset": BLOB_PRESET},
        epochs=epochs,
        runs_dir=paths.runs,
        name=f"{MODEL_NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
        batch_size=default_batch_size(workload.name, UNET_PRESET, UNET_SIZE, "auto"),
        early_stopping=None,
        trainer_options={"max_time": {"seconds": float(seconds)}},
    )
    result = launch(job, artifact_dir=paths.model)
    if result.artifact is None:
        raise ConfigError(f"training run {result.run_dir} exported no model")
    _prune_runs(paths.runs)
    dice = result.metrics.get("val_dice")
    ood = result.metrics.get("val_ood_dice")
    score = f", val Dice {dice:.3f}" if isinstance(dice, (int, float)) else ""
    score += f", out-of-recipe Dice {ood:.3f}" if isinstance(ood, (int, float)) else ""
    return (f"U-Net trained for {result.epochs_completed} epoch(s) in {result.seconds:.0f} s{score} "
            f"-> {result.artifact}")


def _prune_runs(runs: Path, keep: int = RUNS_KEPT) -> None:
    found = sorted((p for p in runs.glob(f"{MODEL_NAME}-*") if p.is_dir()), key=lambda p: p.name)
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def run_demo(*, host: str = "127.0.0.1", port: int = 8000, retrain: bool = False, train_seconds: float = 60.0,
             images: int = 16, say: Callable[[str], None] = log.info) -> None:
    """Render, train (or reuse) and serve until Ctrl-C/SIGTERM; ``say`` reports each step.

    Raises:
        ConfigError: a bad option (checked before anything starts).
    """
    from microforge.platform.runtime import ray_runtime

    from .app import run_foreground
    from .config import ServeConfig
    from .demo_detector import DETECTOR_NAME, ensure_demo_detector

    if train_seconds <= 0:
        raise ConfigError(f"--train-seconds must be > 0, got {train_seconds}")
    if images < 1:
        raise ConfigError(f"--images must be >= 1, got {images}")
    paths = demo_paths()
    config = ServeConfig.load({"host": host, "port": port, "data_root": str(paths.data_root),
                               "models_dir": str(paths.models_dir), "segmentation_model": MODEL_NAME,
                               "default_models": {"detect": DETECTOR_NAME},
                               "state_actor": STATE_ACTOR}).resolved()
    if "RAY_ADDRESS" in os.environ:  # the demo is self-contained: never someone's cluster
        log.info("ignoring RAY_ADDRESS=%s: the demo runs on an embedded local Ray", os.environ["RAY_ADDRESS"])
        del os.environ["RAY_ADDRESS"]

    with ray_runtime():
        say(f"[1/3] rendering a small crystal dataset ({images} images, preset '{CRYSTAL_PRESET}')")
        say("      " + render_dataset(paths, images))
        if retrain or not demo_model_ready(paths):
            say(f"[2/3] training a tiny U-Net on synthetic blobs for about {train_seconds:.0f} s")
            say("      " + train_model(paths, train_seconds))
        else:
            say(f"[2/3] reusing the last demo model {paths.model} (--retrain trains a new one)")
        ensure_demo_detector(paths.models_dir, paths.runs, seconds=train_seconds, retrain=retrain, say=say)
        say("[3/3] starting Ray Serve with the API and the web GUI")

        def ready(url: str) -> None:
            say(f"microforge demo: open {url} (API docs at {url}docs). Crystal dataset for the Time-lapse tab: "
                f"datasets/{DATASET_NAME}/images; U-Net '{MODEL_NAME}' in the Inference tab. Ctrl-C to stop.")

        run_foreground(config, on_ready=ready)
