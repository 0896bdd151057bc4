"""The demo's crystal detector: a tiny ``crystals`` oriented-box detector trained on crystals
rendered each epoch (the ``train crystals`` code path), kept in the demo's models directory and
reused by the next ``microforge demo``; the GUI selects it by default (``default_models.detect``).

The contour heuristic the GUI used before finds hundreds of short fragments on a crystal image
(DIC rods are both darker and brighter than the background); even a briefly trained detector
reports one box per rod.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable

from microforge.platform.errors import ConfigError

log = logging.getLogger(__name__)

DETECTOR_NAME = "demo-crystal-detector"
DETECTOR_PRESET = "tiny"
DETECTOR_SIZE = 256  # training window (px); serving runs whole images (tiled above 1024 px)
TRAIN_SAMPLES = 192  # training windows per epoch (4 from each rendered crystal image)
VAL_SAMPLES = 32  # validation windows; they also choose the count score
BATCH_SIZE = 8
SECONDS_PER_EPOCH = 20.0  # rough CPU time of one epoch above (2 cores), to size the LR schedule
RUNS_KEPT = 3


def detector_dir(models_dir: Path) -> Path:
    return Path(models_dir) / DETECTOR_NAME


def detector_ready(models_dir: Path) -> bool:
    """Whether a complete, verified demo detector that this version's network loads is in
    ``models_dir`` (one saved by an older version, with other heads, is trained anew)."""
    from microforge.platform.artifact import ArtifactError
    from microforge.trainers.registry import load_artifact

    folder = detector_dir(models_dir)
    if not folder.exists():
        return False
    try:
        load_artifact(folder)
        return True
    except ArtifactError as exc:
        log.warning("the last demo detector cannot be used (%s); training a new one", exc)
        return False


def train_detector(models_dir: Path, runs_dir: Path, seconds: float) -> str:
    """Train the tiny crystal detector with the ``train crystals`` code path for about
    ``seconds`` and export it to ``models_dir/demo-crystal-detector``; a one-line summary."""
    from microforge.trainers.launcher import launch
    from microforge.trainers.workload import get_workload

    epochs = max(2, round(seconds / SECONDS_PER_EPOCH))
    workload = get_workload("crystals")
    job = workload.job(
        {"preset": DETECTOR_PRESET, "image_size": DETECTOR_SIZE, "train_samples": TRAIN_SAMPLES,
         "val_samples": VAL_SAMPLES},
        epochs=epochs,
        runs_dir=runs_dir,
        name=f"{DETECTOR_NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
        batch_size=BATCH_SIZE,
        early_stopping=None,
        trainer_options={"max_time": {"seconds": float(seconds)}},
    )
    result = launch(job, artifact_dir=detector_dir(models_dir))
    if result.artifact is None:
        raise ConfigError(f"training run {result.run_dir} exported no detector")
    found = sorted((p for p in Path(runs_dir).glob(f"{DETECTOR_NAME}-*") if p.is_dir()), key=lambda p: p.name)
    for old in found[:-RUNS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)
    ap = result.metrics.get("val_ap50")
    score = f", val AP50 {ap:.3f}" if isinstance(ap, (int, float)) else ""
    return (f"crystal detector trained for {result.epochs_completed} epoch(s) in {result.seconds:.0f} s{score} "
            f"-> {result.artifact}")


def ensure_demo_detector(models_dir: Path, runs_dir: Path, *, seconds: float, retrain: bool = False,
                         say: Callable[[str], None] = log.info) -> str:
    """Train the demo detector (or reuse the last one); returns its model id for
    ``default_models.detect``."""
    if retrain or not detector_ready(models_dir):
        say(f"      training a tiny crystal detector on rendered crystals for about {seconds:.0f} s")
        say("      " + train_detector(models_dir, runs_dir, seconds))
    else:
        say(f"      reusing the last demo crystal detector {detector_dir(models_dir)}")
    return DETECTOR_NAME
