"""Pictures of ``eval diffusion``: real and generated images side by side, one row per phase."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["phase_samples"]

TILE, PER_ROW, LABEL_W, GAP = 96, 4, 70, 16
AGREE, DISAGREE = (40, 170, 40), (40, 40, 220)  # BGR: green, red


def _tile(image: np.ndarray, frame: tuple[int, int, int] | None = None, caption: str = "") -> np.ndarray:
    import cv2

    grey = cv2.resize((np.clip(image, 0, 1) * 255).round().astype(np.uint8), (TILE, TILE),
                      interpolation=cv2.INTER_AREA if image.shape[0] > TILE else cv2.INTER_NEAREST)
    tile = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    if frame is not None:
        cv2.rectangle(tile, (0, 0), (TILE - 1, TILE - 1), frame, 3)
        # What the classifier saw it as, on a white strip so that it reads on any image.
        cv2.rectangle(tile, (3, TILE - 17), (3 + 9 * len(caption), TILE - 4), (255, 255, 255), -1)
        cv2.putText(tile, caption, (4, TILE - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, frame, 1, cv2.LINE_AA)
    return tile


def _row(label: str, real: list[np.ndarray], fake: list[np.ndarray]) -> np.ndarray:
    import cv2

    blank = [np.full((TILE, TILE, 3), 255, np.uint8)]
    head = np.full((TILE, LABEL_W, 3), 255, np.uint8)
    cv2.putText(head, label, (6, TILE // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.hstack([head, *real, *blank * (PER_ROW - len(real)), np.full((TILE, GAP, 3), 255, np.uint8),
                      *fake, *blank * (PER_ROW - len(fake))])


def phase_samples(phases: Sequence[str], real: Any, fake: Any, predicted: Sequence[str]) -> np.ndarray:
    """A BGR picture: per phase, up to 4 real images of it and up to 4 images generated for it, each
    generated one framed green when the classifier calls it that phase, red (with its verdict) when not.

    ``real`` and ``fake`` are :class:`~.phase_classifier.PhaseImages`; ``predicted`` the classifier's
    phase of each ``fake`` image.
    """
    import cv2

    rows = []
    for phase in phases:
        real_i = [i for i, p in enumerate(real.phases) if p == phase][:PER_ROW]
        fake_i = [i for i, p in enumerate(fake.phases) if p == phase][:PER_ROW]
        rows.append(_row(phase, [_tile(real.images[i]) for i in real_i],
                         [_tile(fake.images[i], AGREE if predicted[i] == phase else DISAGREE, predicted[i])
                          for i in fake_i]))
    width = LABEL_W + 2 * PER_ROW * TILE + GAP
    header = np.full((28, width, 3), 255, np.uint8)
    cv2.putText(header, "REAL", (LABEL_W + 4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(header, "GENERATED (green: classifier agrees)", (LABEL_W + PER_ROW * TILE + GAP + 4, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    gap = np.full((4, width, 3), 255, np.uint8)
    return np.vstack([header, *[part for row in rows for part in (row, gap)]])
