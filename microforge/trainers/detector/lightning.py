"""Crystal detector training: ``CrystalDetector`` as a LightningModule.

Batches are the dense rows of :mod:`.data` (``image (B, 1, S, S)``, heatmap / regression targets,
``boxes`` padded and ``n_boxes``). The loss is CenterNet's: the penalty-reduced focal loss on the
heatmap (alpha 2, beta 4) normalised by the number of rods, plus L1 on log sizes and on ``(cos 2θ,
sin 2θ)`` weighted by ``reg_weight`` (per cell, over each rod's Gaussian, so a long rod weighs more
than a short one; see :mod:`.targets`), L1 on the sub-cell offset at the centre cells, and L1 on the
log distance to the rod's end at every cell of a rod's middle 80 %. Validation decodes the maps
(rotated NMS) and pools the matches of every rank into ``val_ap50`` (rotated IoU >= 0.5, area under
the interpolated PR curve), which ranks checkpoints, plus ``val_ap50_95``, ``val_count_score``: the
score threshold of :data:`~.targets.COUNT_SCORE_GRID` whose count of detections is nearest the rods'
(mean |detections - rods| / max(rods, 1) per window, over the rods and detections centred in the
window's interior, pooled over ranks; a focal-loss heatmap's scores are not calibrated
probabilities, so a fixed threshold over- or under-counts), and ``val_count_error`` at it (chosen on
the same windows, so a little optimistic; runs before the choice logged it at 0.3). The threshold is
kept in the module's state (so the checkpoint ranked best carries its own) and recorded in the
artifact, where ``eval`` and Serve count with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from microforge.platform.errors import ConfigError
from microforge.trainers.lightning_import import pl
from microforge.trainers.schedules import adamw_warmup_cosine

from .metrics import average_precision, match_image
from .model import detector_from_preset
from .targets import COUNT_SCORE, COUNT_SCORE_GRID, DecodeSettings, check_scale, decode_maps

__all__ = ["DetectorModule", "detector_loss", "focal_loss", "window_count_errors"]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of peaks (>= 1)."""
    prob = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(prob) * (1 - prob) ** alpha * pos
    neg_loss = -torch.log(1 - prob) * prob ** alpha * (1 - target) ** beta * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1.0)


# Each regressed map and the map of its per-cell L1 weights.
REGRESSIONS = {"size": "reg_weight", "angle": "reg_weight", "offset": "reg_mask", "end_distance": "end_mask"}


def detector_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                  weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts ``heatmap, size, angle, offset, end_distance``; ``weights`` scale
    all but the heatmap, in that order."""
    parts = {"heatmap": focal_loss(out["heatmap"], batch["heatmap"].float())}
    for name, weight_key in REGRESSIONS.items():
        weight = batch[weight_key].float()
        l1 = F.l1_loss(out[name].float(), batch[name].float(), reduction="none")
        parts[name] = (l1 * weight).sum() / weight.sum().clamp_min(1.0)
    total = parts["heatmap"] + sum(w * parts[name] for w, name in zip(weights, REGRESSIONS, strict=True))
    return total, parts


COUNT_MARGIN_DIVISOR = 8  # validation counts rods centred at least a window side / 8 from its edges


def window_count_errors(boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray, side: tuple[int, int]) -> np.ndarray:
    """Relative count error ``|detections - rods| / max(rods, 1)`` of one validation window
    ``side`` (W, H) at each score of :data:`~.targets.COUNT_SCORE_GRID`.

    Only rods and detections centred in the window's interior count (a side / 8 margin): rods cut
    by its edge are labelled from a quarter visible, and such stubs score low, which pulled the
    chosen score below what whole images need (a window's edges cut far more rods than an image's
    border does)."""
    margin = min(side) // COUNT_MARGIN_DIVISOR
    limit = np.asarray(side, dtype=np.float64) - margin

    def inside(b: np.ndarray) -> np.ndarray:
        centres = np.asarray(b, dtype=np.float64).reshape(-1, 5)[:, :2]
        return np.all((centres >= margin) & (centres < limit), axis=1)

    n_found = (np.asarray(scores)[inside(boxes)][None, :] >= np.asarray(COUNT_SCORE_GRID)[:, None]).sum(axis=1)
    n_rods = int(inside(gt).sum())
    return np.abs(n_found - n_rods) / max(n_rods, 1)


def _default_count_score(module: torch.nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Checkpoints written before the count score was chosen on validation load with the default."""
    state_dict.setdefault(prefix + "count_score", torch.tensor(COUNT_SCORE, dtype=torch.float64))


class DetectorModule(pl.LightningModule):
    """Oriented-box crystal detector training.

    Args:
        preset: ``tiny``, ``small`` or ``standard`` (see ``DETECTOR_PRESETS``).
        model_overrides: constructor arguments replacing the preset's.
        image_size: training window side (recorded in the artifact).
        input_scale: the factor training images were resized by (recorded: inference resizes by it).
        lr, weight_decay, warmup_fraction, min_lr_ratio: AdamW with warm-up then cosine decay.
        size_weight, angle_weight, offset_weight, end_distance_weight: weights of the regression losses.
        max_boxes: boxes per window kept for validation AP (as the data pads them).

    Raises:
        ConfigError: an unknown preset or override, a value out of range, or an image size that is
            not a multiple of the network's size multiple.
    """

    def __init__(self, preset: str = "tiny", model_overrides: dict[str, Any] | None = None, image_size: int = 256,
                 input_scale: float = 1.0, lr: float = 2e-3, weight_decay: float = 1e-4, warmup_fraction: float = 0.05,
                 min_lr_ratio: float = 0.01, size_weight: float = 1.0, angle_weight: float = 1.0,
                 offset_weight: float = 1.0, end_distance_weight: float = 1.0, max_boxes: int = 512) -> None:
        super().__init__()
        check_scale(input_scale)
        if lr <= 0 or weight_decay < 0 or not 0 <= warmup_fraction < 1 or not 0 <= min_lr_ratio <= 1:
            raise ConfigError("DetectorModule: need lr > 0, weight_decay >= 0, warmup_fraction in [0, 1), "
                              f"min_lr_ratio in [0, 1]; got {lr}, {weight_decay}, {warmup_fraction}, {min_lr_ratio}")
        self.save_hyperparameters()
        self.model = detector_from_preset(preset, **(model_overrides or {}))
        if image_size % self.model.size_multiple:
            raise ConfigError(f"image size {image_size} does not fit detector preset '{preset}': "
                              f"use a multiple of {self.model.size_multiple}")
        self.register_buffer("count_score", torch.tensor(COUNT_SCORE, dtype=torch.float64))
        self.register_load_state_dict_pre_hook(_default_count_score)
        self._matches: list = []
        self._count_errors: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(x)

    def example_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """A random batch of the training shape, for memory and speed probes."""
        size, cells = self.hparams.image_size, self.hparams.image_size // self.model.stride
        heat = torch.zeros(batch_size, 1, cells, cells)
        heat[:, :, cells // 2, cells // 2] = 1.0
        return {"image": torch.rand(batch_size, 1, size, size), "heatmap": heat, "reg_mask": heat.clone(),
                "reg_weight": heat.clone(), "end_distance": torch.zeros(batch_size, 1, cells, cells),
                "end_mask": heat.clone(),
                **{k: torch.zeros(batch_size, 2, cells, cells) for k in ("size", "angle", "offset")}}

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
        out = self.model(batch["image"].float())
        hp = self.hparams
        loss, parts = detector_loss(out, batch, (hp.size_weight, hp.angle_weight, hp.offset_weight,
                                                 hp.end_distance_weight))
        return out, loss, parts

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, loss, parts = self._loss(batch)
        size = batch["image"].shape[0]
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        self.log_dict({f"train_{k}": v for k, v in parts.items()}, on_step=False, on_epoch=True, sync_dist=True,
                      batch_size=size)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return adamw_warmup_cosine(self.parameters(), self.trainer.estimated_stepping_batches, lr=hp.lr,
                                   weight_decay=hp.weight_decay, warmup_fraction=hp.warmup_fraction,
                                   min_lr_ratio=hp.min_lr_ratio)

    # -- validation ----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._matches, self._count_errors, self._val_loss = [], [], []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out, loss, _ = self._loss(batch)
        self._val_loss.append((float(loss), batch["image"].shape[0]))
        heat = torch.sigmoid(out["heatmap"].float()).cpu().numpy()
        maps = {k: out[k].float().cpu().numpy() for k in ("size", "angle", "offset", "end_distance")}
        gts, counts = batch["boxes"].cpu().numpy(), batch["n_boxes"].cpu().numpy()
        side = tuple(batch["image"].shape[-2:])[::-1]  # (W, H)
        for i in range(len(heat)):
            boxes, scores = decode_maps(heat[i], maps["size"][i], maps["angle"][i], maps["offset"][i],
                                        self.model.stride, DecodeSettings(score_threshold=0.05),
                                        end_distance=maps["end_distance"][i])
            gt = gts[i, :int(counts[i])]
            self._matches.append(match_image(boxes, scores, gt))
            self._count_errors.append(window_count_errors(boxes, scores, gt, side))

    def on_validation_epoch_end(self) -> None:
        # Matches are pooled over all ranks (AP is not a mean of per-rank APs): gather them.
        gathered = [self._matches]
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, self._matches)
        matches = [m for part in gathered for m in part]
        if not matches:
            return
        ap = average_precision(matches)
        count_errors = np.sum(self._count_errors, axis=0) if self._count_errors else np.zeros(len(COUNT_SCORE_GRID))
        sums = torch.tensor([sum(l * n for l, n in self._val_loss), sum(n for _, n in self._val_loss),
                             *count_errors], dtype=torch.float64, device=self.device)
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        best = int(torch.argmin(sums[2:]))  # the same on every rank: the sums are
        self.count_score.fill_(COUNT_SCORE_GRID[best])
        values = {"val_ap50": ap["ap50"], "val_ap50_95": ap["ap50_95"],
                  "val_loss": float(sums[0] / sums[1].clamp_min(1)),
                  "val_count_error": float(sums[2 + best] / sums[1].clamp_min(1)),
                  "val_count_score": COUNT_SCORE_GRID[best]}
        self.log_dict(values, on_step=False, on_epoch=True, sync_dist=False)  # equal on all ranks already

    # -- export --------------------------------------------------------------------------------

    def export_components(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def export_preprocessing(self) -> dict[str, Any]:
        return {
            "channels": self.model.config["in_channels"],
            "layout": "(B, 1, H, W) float32",
            "size_multiple": self.model.size_multiple,
            "image_size": self.hparams.image_size,
            "input_scale": self.hparams.input_scale,
            "count_score": float(self.count_score),
            "stride": self.model.stride,
            "output": "maps: heatmap logits, log(length), log(width), (cos 2θ, sin 2θ), offset",
            "task": "oriented boxes (cx, cy, length, width, angle) of rod crystals",
        }
