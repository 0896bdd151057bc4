"""The ``ddpm`` workload: a class-conditional DDPM on an embryo image folder (one image per phase
of each video), trained from scratch with classifier-free guidance labels.

``microforge train ddpm --data FOLDER --resolution 64 --steps N [--val-data FOLDER]``; images
reach the UNet through the recorded ``signed_unit`` transform and are resized to the resolution
on the worker. The artifact holds ``unet_ema`` and ``unet`` (diffusers ``UNet2DModel`` config and
weights) and, beside the card, a ``diffusers/`` folder that diffusers alone loads. Generation is
``microforge generate diffusion`` offline and Serve's ``/generate`` (with a phase) online; both
sample through the sampler the artifact declares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from microforge.platform.config import ConfigModel
from microforge.platform.errors import ConfigError
from microforge.trainers.workload import Cadence, RunPlan, Workload

from .data import TRANSFORM

__all__ = ["DDPM", "DdpmOptions", "plan_ddpm", "probe_ddpm"]


class DdpmOptions(ConfigModel):
    """Options of ``microforge train ddpm``."""

    data: Optional[str] = Field(None, description="embryo image folder to train on (microforge data embryo image-folder)")
    val_data: Optional[str] = Field(None, description="image folder of held-out images for val_loss "
                                                      "(default: the training folder)")
    resolution: Literal[32, 64, 128, 256] = Field(64, description="image side in pixels (images are resized)")
    size: Literal["tiny", "small", "base"] = Field("small", description="UNet size: base width 32, 64, 128")
    width: Optional[int] = Field(None, ge=4, le=512, description="UNet base width, overriding the size's (CPU runs)")
    levels: Optional[int] = Field(None, ge=1, le=6, description="UNet levels (default: down to 8 x 8)")
    layers_per_block: Optional[int] = Field(None, ge=1, le=4, description="ResNet layers per level (default: the size's)")
    lr: float = Field(1e-4, gt=0, le=1, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay")
    warmup_steps: int = Field(500, ge=0, le=1_000_000, description="linear learning-rate warm-up steps")
    ema_decay: float = Field(0.9999, ge=0, lt=1, description="maximum EMA decay (warmed up as (1+s)/(10+s))")
    label_dropout: float = Field(0.1, ge=0, le=1, description="probability of training on the null class "
                                                              "(classifier-free guidance)")
    num_train_timesteps: int = Field(1000, ge=10, le=10_000, description="DDPM noise steps")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field("linear", description="noise schedule")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="initial-weight seed")


def _folder_record(folder: str) -> dict:
    try:
        return json.loads((Path(folder) / "dataset.json").read_text())
    except (OSError, ValueError):
        return {}


def plan_ddpm(options: DdpmOptions) -> RunPlan:
    """Module config and data of a DDPM run.

    Raises:
        ConfigError: no --data.
        DatasetError: a folder that is not an embryo image folder.
    """
    from .data import FolderPairData

    if options.data is None:
        raise ConfigError("--data is required: an embryo image folder (microforge data embryo image-folder)")
    data = FolderPairData(options.data, options.val_data or options.data)
    config = options.to_json_dict()
    module_config = {k: config[k] for k in ("resolution", "size", "width", "levels", "layers_per_block", "lr",
                                            "weight_decay", "warmup_steps", "ema_decay", "label_dropout",
                                            "num_train_timesteps", "beta_schedule")}
    record = _folder_record(options.data)
    from microforge.datasets.embryo.layout import PHASES, PROMPT_TEMPLATE

    module_config["classes"] = list(PHASES)  # label i is PHASES[i] in every folder (phase_index)
    module_config["prompt_template"] = record.get("prompt_template", PROMPT_TEMPLATE)
    return RunPlan(module_config, data)


def probe_ddpm(preset: str, resolution: int):
    """The module a batch-size probe trains."""
    from .lightning import DDPMModule

    return DDPMModule(resolution=resolution, size=preset)


DDPM = Workload(
    name="ddpm",
    description="class-conditional DDPM (diffusers UNet2DModel, classifier-free guidance) on embryo image folders",
    module="microforge.trainers.diffusion.lightning:DDPMModule",
    options="microforge.trainers.diffusion.workload:DdpmOptions",
    plan="microforge.trainers.diffusion.workload:plan_ddpm",
    presets=("tiny", "small", "base"),
    metric="val_loss",
    mode="min",
    cadence=Cadence(every=500, unit="steps"),
    components=("unet_ema", "unet"),
    transform=TRANSFORM,
    serve_task="generate",
    probe="microforge.trainers.diffusion.workload:probe_ddpm",
    preset_option="size",
    size_option="resolution",
    gradient_clip_val=1.0,
)
