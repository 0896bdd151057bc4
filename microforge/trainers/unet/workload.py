"""The ``delineation`` workload: the Attention U-Net trained on blobs rendered every epoch.

Training epoch ``e`` renders ``train_samples`` new blobs with the curriculum's noise for ``e``;
validation renders the same ``val_samples`` blobs every epoch at the config's full noise range,
so ``val_dice``, which ranks checkpoints and drives early stopping, measures the target task.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from microforge.platform.config import ConfigModel
from microforge.trainers.workload import RunPlan, Workload

__all__ = ["DELINEATION", "DelineationOptions", "UNET_IMAGE_SIZES", "plan_delineation"]

# Training image size of each preset when none is asked for (the tiny net is for CPUs).
UNET_IMAGE_SIZES = {"tiny": 128, "small": 256, "standard": 512}
RENDERER = "microforge.datasets.blobs:render_blob_batch"
CURRICULUM = "microforge.trainers.unet.lightning:curriculum_settings"
ROBUST_RESCALE = 0.5  # random_rescale of robust-preset runs: objects at 2/3 to 3/2 of the recipe's scale


class DelineationOptions(ConfigModel):
    """Options of ``microforge train delineation`` (each is a flag, a Tune hyperparameter and a
    field the resume check compares)."""

    preset: Literal["tiny", "small", "standard"] = Field("tiny", description="network size")
    image_size: Optional[int] = Field(None, ge=8, le=8192, json_schema_extra={"flags": ["--size"]},
                                      description="image side in pixels (default: tiny 128, small 256, standard 512)")
    train_samples: int = Field(256, ge=1, le=10_000_000, description="blobs rendered per training epoch")
    val_samples: int = Field(64, ge=0, le=1_000_000, description="validation blobs (the same every epoch)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="data and initial-weight seed")
    lr: float = Field(1e-4, gt=0, le=1.0, description="AdamW learning rate")
    weight_decay: float = Field(1e-5, ge=0, le=1.0, description="AdamW weight decay")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of steps in linear LR warm-up")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="the cosine decays to lr x this")
    boundary_samples: int = Field(32, ge=0, le=100_000, description="validation samples per rank with HD95/BF1")
    boundary_tolerance: float = Field(2.0, ge=0, le=100, description="boundary-F1 tolerance in pixels")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="AttentionUNet arguments (JSON)")
    blob_preset: str = Field("default", description="blob recipe: 'default' (the reference ranges) or 'robust' "
                                                    "(wider ranges; see microforge.datasets.blob_presets)")
    blob_options: dict[str, Any] = Field(default_factory=dict, description="BlobConfig fields (JSON), on top of "
                                                                           "the blob preset")
    random_rescale: Optional[float] = Field(None, ge=0, le=3, description="rescale each training batch by a random "
                                            "factor in [1/(1+a), 1+a] (default: 0.5 with --blob-preset robust, else 0)")
    data: Optional[str] = Field(None, description="train on this dataset directory (a manifest with image and mask "
                                                  "columns, splits train/val; 8- or 16-bit) instead of rendered blobs")

    @model_validator(mode="after")
    def _default_size(self) -> "DelineationOptions":
        if self.image_size is None:
            object.__setattr__(self, "image_size", UNET_IMAGE_SIZES[self.preset])
        if self.random_rescale is None:
            object.__setattr__(self, "random_rescale", ROBUST_RESCALE if self.blob_preset == "robust" else 0.0)
        from microforge.datasets.blob_presets import BLOB_PRESETS

        if self.blob_preset not in BLOB_PRESETS:
            from microforge.platform.config import suggest

            raise ValueError(f"unknown blob preset '{self.blob_preset}'{suggest(self.blob_preset, tuple(BLOB_PRESETS))}; "
                             f"valid: {', '.join(BLOB_PRESETS)}")
        return self


def plan_delineation(options: DelineationOptions) -> RunPlan:
    """Module config and blob data of a delineation run.

    Raises:
        ConfigError: an invalid blob option.
    """
    from microforge.datasets.blob_presets import blob_config
    from microforge.trainers.data import SyntheticData

    from microforge.trainers.manifest_data import ManifestData

    module_config = options.to_json_dict()
    for key in ("train_samples", "val_samples", "blob_preset", "blob_options", "data"):
        module_config.pop(key)
    if options.data is not None:
        data = ManifestData(options.data, columns=("image", "mask", "index"), transform=dict(DELINEATION.transform))
        if "val" in data.splits():
            return RunPlan(module_config, data)
        return RunPlan(module_config, data, monitor="train_loss", mode="min")
    blob = blob_config(options.blob_options, preset=options.blob_preset, size=options.image_size)
    module_config["blob"] = blob.to_json_dict()
    data = SyntheticData(renderer=RENDERER, config=blob.to_json_dict(), seed=options.seed,
                         train_samples=options.train_samples, val_samples=options.val_samples, schedule=CURRICULUM)
    if options.val_samples:
        return RunPlan(module_config, data)
    return RunPlan(module_config, data, monitor="train_loss", mode="min")


DELINEATION = Workload(
    name="delineation",
    description="Attention U-Net delineation on blobs synthesised each epoch under the noise curriculum",
    module="microforge.trainers.unet.lightning:UNetModule",
    options="microforge.trainers.unet.workload:DelineationOptions",
    plan="microforge.trainers.unet.workload:plan_delineation",
    presets=("tiny", "small", "standard"),
    metric="val_dice",
    mode="max",
    components=("model",),
    transform={"name": "unit_range", "params": {}},
    serve_task="segment",
    tune_space="microforge.trainers.unet.workload:SEARCH_SPACE",
    aliases=("unet",),
    early_stopping_patience=10,
    early_stopping_min_delta=1e-3,
    evaluate="microforge.trainers.unet.cli:register_eval",
    gradient_clip_val=1.0,
    legacy_names={"attention_unet": "microforge.trainers.unet.model:AttentionUNet"},
)

# The default space of `microforge tune hparams --workload delineation`.
SEARCH_SPACE = {
    "preset": "tiny",
    "image_size": 128,
    "train_samples": 256,
    "val_samples": 64,
    "lr": {"loguniform": [1.0e-5, 3.0e-3]},
    "weight_decay": {"loguniform": [1.0e-6, 1.0e-3]},
    "warmup_fraction": {"uniform": [0.0, 0.1]},
    "batch_size": {"choice": [8, 16]},
}
