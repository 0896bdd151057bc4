"""The phase classifier of ``eval diffusion``: phase-labelled grey images, the held-out split by
video, and a small CNN trained on real (or rendered) embryo frames whose verdict on a generated
image says whether it shows the phase it was generated for.

:func:`train_phase_classifier` is deterministic given its inputs and seed (on one machine and
thread count): weights come from a forked torch RNG seeded with it, batches and augmentation
from ``SeedSequence([seed, ...])``; the global RNGs are left alone.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..datasets.embryo.layout import PHASES
from ..datasets.manifest import decode_image
from ..platform.errors import ConfigError, DatasetError
from .images import grey, to_float

__all__ = ["CLASSIFIER_STEPS", "FEATURE_DIM", "PhaseClassifier", "PhaseImages", "holdout_mask",
           "load_phase_images", "train_phase_classifier"]

log = logging.getLogger(__name__)

CLASSIFIER_STEPS = 400
BATCH_SIZE = 32
FEATURE_DIM = 64  # width of the penultimate features the Fréchet distance is computed on
_HOLDOUT_STREAM, _TRAIN_STREAM = 0x401D, 0x7EA1


@dataclass(frozen=True)
class PhaseImages:
    """Grey images ``(N, S, S)`` float32 in ``[0, 1]``, their phases, files, and videos where known."""

    images: np.ndarray
    phases: tuple[str, ...]
    paths: tuple[Path, ...]
    videos: tuple[str, ...] | None = None

    def subset(self, keep: np.ndarray) -> "PhaseImages":
        idx = np.flatnonzero(keep)
        return PhaseImages(self.images[idx], tuple(self.phases[i] for i in idx), tuple(self.paths[i] for i in idx),
                           None if self.videos is None else tuple(self.videos[i] for i in idx))


def load_phase_images(paths: Sequence[Path], phases: Sequence[str], side: int,
                      videos: Sequence[str] | None = None) -> PhaseImages:
    """Decode ``paths`` to grey ``[0, 1]`` on their full bit depth and resize them to ``side`` as the
    DDPM resizes its training images (bilinear with antialiasing).

    Raises:
        DatasetError: a missing or undecodable file.
    """
    import torch
    import torch.nn.functional as F

    out = np.empty((len(paths), side, side), np.float32)
    for i, path in enumerate(paths):
        x = torch.from_numpy(grey(to_float(decode_image(path))).astype(np.float32))[None, None]
        if x.shape[-2:] != (side, side):
            # trainers.diffusion.lightning.to_model_images' resize (tested equal), without importing Lightning
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out[i] = x[0, 0].numpy()
        if (i + 1) % 500 == 0:
            log.info("read %d of %d images", i + 1, len(paths))
    return PhaseImages(np.clip(out, 0.0, 1.0), tuple(phases), tuple(paths), None if videos is None else tuple(videos))


def holdout_mask(groups: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Which rows are held out: all the rows of a seeded ``fraction`` of the groups (videos), at
    least one group and never all, so no video is both trained on and tested on.

    Raises:
        DatasetError: fewer than 2 groups.
    """
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise DatasetError(f"the image folder shows {len(unique)} video; at least 2 are needed (one to train the "
                           "phase classifier on, one to check it)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _HOLDOUT_STREAM]))
    k = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    held = {unique[i] for i in rng.permutation(len(unique))[:k]}
    return np.array([g in held for g in groups], bool)


def _network(classes: int, width: int) -> Any:
    from torch import nn

    class PhaseCNN(nn.Module):
        """Four conv blocks (3 x 3 conv, BatchNorm, ReLU, 2 x 2 max-pool), global average pooling,
        a :data:`FEATURE_DIM`-d embedding (the penultimate features) and a linear head: small enough
        to train in seconds on a CPU at 32 px."""

        def __init__(self) -> None:
            super().__init__()
            layers, c_in = [], 1
            for c in (width, 2 * width, 4 * width, 4 * width):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                           nn.MaxPool2d(2)]
                c_in = c
            self.body = nn.Sequential(*layers)
            self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, FEATURE_DIM),
                                       nn.ReLU(inplace=True))
            self.head = nn.Linear(FEATURE_DIM, classes)

        def features(self, x: Any) -> Any:
            return self.embed(self.body(x))

        def forward(self, x: Any) -> Any:
            return self.head(self.features(x))

    return PhaseCNN()


@dataclass
class PhaseClassifier:
    """A trained phase classifier: the network, its classes (phases, in development order), the
    image side it takes, and how it was trained."""

    model: Any
    classes: tuple[str, ...]
    side: int
    info: dict[str, Any]

    def predict(self, images: np.ndarray, batch_size: int = 64) -> tuple[list[str], np.ndarray]:
        """Predicted phases and penultimate features ``(N, FEATURE_DIM)`` of images ``(N, S, S)`` in [0, 1]."""
        import torch

        if images.shape[1:] != (self.side, self.side):
            raise ConfigError(f"the classifier takes {self.side} x {self.side} images, got {images.shape[1:]}")
        preds, feats = [], []
        self.model.eval()
        with torch.inference_mode(), _one_thread():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(images[start:start + batch_size, None]) * 2.0 - 1.0
                f = self.model.features(x)
                preds.append(self.model.head(f).argmax(1).numpy())
                feats.append(f.double().numpy())
        labels = np.concatenate(preds) if preds else np.zeros(0, int)
        return [self.classes[i] for i in labels], np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one intra-op thread for the duration: a net this small gains little from more, and
    loses much to threads that spin while other work shares the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _augment(x: Any, rng: np.random.Generator) -> Any:
    """Random dihedral turn (an embryo has no up or left) and a mild gain/offset per image, so the
    classifier judges shape and texture rather than orientation or exact brightness."""
    import torch

    turns, flips = rng.integers(0, 4, len(x)), rng.random(len(x)) < 0.5
    out = [torch.rot90(xi, int(k), dims=(1, 2)) for xi, k in zip(x, turns)]
    out = torch.stack([xi.flip(-1) if f else xi for xi, f in zip(out, flips)])
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, (len(x), 1, 1, 1)).astype(np.float32))
    offset = torch.from_numpy(rng.uniform(-0.05, 0.05, (len(x), 1, 1, 1)).astype(np.float32))
    return out * gain + offset


def train_phase_classifier(real: PhaseImages, *, steps: int = CLASSIFIER_STEPS, seed: int = 0, width: int = 16,
                           lr: float = 2e-3, batch_size: int = BATCH_SIZE) -> PhaseClassifier:
    """Train the phase CNN on ``real`` (AdamW, cosine decay, class-balanced batches,
    augmentation); the same inputs and seed give the same weights on one machine.

    Raises:
        DatasetError: fewer than 2 phases among the images.
    """
    import torch

    classes = tuple(p for p in PHASES if p in set(real.phases))
    if len(classes) < 2:
        raise DatasetError(f"the classifier needs frames of at least 2 phases; the training videos show "
                           f"{', '.join(classes) or 'none'}")
    y = np.array([classes.index(p) for p in real.phases])
    x = torch.from_numpy(real.images[:, None]) * 2.0 - 1.0
    # Weights and batches come from the seed alone, never from the global RNG's state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _network(len(classes), width)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TRAIN_STREAM]))
    p = 1.0 / np.bincount(y)[y]  # class-balanced: a rare phase (t3, t5) is seen as often as a common one
    p /= p.sum()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / steps)))
    started, losses = time.perf_counter(), []
    model.train()
    with _one_thread():
        _train_steps(model, optimizer, schedule, x, y, p, rng, steps, batch_size, losses)
    model.eval()
    info = {"steps": steps, "seed": seed, "width": width, "lr": lr, "batch_size": batch_size,
            "train_images": len(y), "final_loss": float(np.mean(losses[-20:])),
            "seconds": round(time.perf_counter() - started, 3)}
    return PhaseClassifier(model, classes, int(real.images.shape[-1]), info)


def _train_steps(model: Any, optimizer: Any, schedule: Any, x: Any, y: np.ndarray, p: np.ndarray,
                 rng: np.random.Generator, steps: int, batch_size: int, losses: list[float]) -> None:
    import torch
    import torch.nn.functional as F

    for step in range(steps):
        idx = rng.choice(len(y), size=batch_size, p=p)
        loss = F.cross_entropy(model(_augment(x[idx], rng)), torch.from_numpy(y[idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            log.info("phase classifier step %d of %d, loss %.3f", step + 1, steps, np.mean(losses[-100:]))
