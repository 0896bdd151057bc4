"""The ``crystals`` workload: the oriented-box rod detector on rendered or stored crystal images.

``--synth crystals[:PRESET]`` (the default, preset ``default``) renders new crystal images each
epoch with Ray tasks, resizes them by ``input_scale`` and trains on ``train_samples`` windows of
``image_size``, ``windows_per_image`` from each image, augmented (flips, 90-degree turns,
brightness / contrast / blur); validation renders the same ``val_samples`` windows every epoch,
unaugmented. ``--data DIR`` trains on a dataset directory
with DOTA or Ultralytics OBB labels instead (its ``train`` and ``val`` splits). ``val_ap50``
ranks checkpoints.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from microforge.platform.config import ConfigModel
from microforge.platform.errors import ConfigError
from microforge.trainers.workload import RunPlan, Workload

__all__ = ["CRYSTALS", "CrystalsOptions", "DETECTOR_IMAGE_SIZES", "parse_synth", "plan_crystals"]

# Training window of each preset when none is asked for (the tiny net is for CPUs).
DETECTOR_IMAGE_SIZES = {"tiny": 256, "small": 384, "standard": 512}
RENDERER = "microforge.trainers.detector.data:render_crystal_tiles"
SCHEDULE = "microforge.trainers.detector.data:train_settings"


def parse_synth(value: str) -> str:
    """The crystal preset of ``crystals`` or ``crystals:PRESET`` (``default`` when none is named).

    Raises:
        ConfigError: another renderer, or an unknown preset (with a did-you-mean).
    """
    from microforge.datasets.crystals.config import load_preset

    kind, _, preset = value.partition(":")
    if kind != "crystals":
        raise ConfigError(f"--synth {value}: the crystals workload renders 'crystals' or 'crystals:PRESET'")
    preset = preset or "default"
    load_preset(preset)
    return preset


class CrystalsOptions(ConfigModel):
    """Options of ``microforge train crystals`` (each is a flag, a Tune hyperparameter and a field
    the resume check compares)."""

    preset: Literal["tiny", "small", "standard"] = Field("tiny", description="network size")
    image_size: Optional[int] = Field(None, ge=32, le=4096, json_schema_extra={"flags": ["--size"]},
                                      description="training window side in pixels, a multiple of 16 "
                                                  "(default: tiny 256, small 384, standard 512)")
    synth: Optional[str] = Field(None, description="render crystals on the fly: 'crystals' or 'crystals:PRESET' "
                                                   "(default when --data is not given: crystals:default)")
    data: Optional[str] = Field(None, description="train on this dataset directory (images with DOTA or "
                                                  "Ultralytics OBB labels, splits train/val) instead of rendering")
    crystal_options: dict[str, Any] = Field(default_factory=dict,
                                            description="CrystalConfig fields replacing the preset's (JSON)")
    input_scale: float = Field(0.5, ge=0.05, le=4.0, description="resize factor of the images before windows "
                               "are cut; recorded, so inference resizes by it too (0.5: the default preset's "
                               "30-380 px rods fit the tiny net's field of view and a 256 px window)")
    windows_per_image: int = Field(4, ge=1, le=64, description="training windows cut from each rendered image "
                                                                "(a render costs 2-4 windows' training)")
    train_samples: int = Field(256, ge=1, le=10_000_000, description="training windows per epoch")
    val_samples: int = Field(32, ge=0, le=1_000_000, description="validation windows, the same every epoch "
                                                                 "(rounded up to whole rendered images)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="data and initial-weight seed")
    lr: float = Field(2e-3, gt=0, le=1.0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=1.0, description="AdamW weight decay")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of steps in linear LR warm-up")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="the cosine decays to lr x this")
    size_weight: float = Field(1.0, ge=0, le=100, description="weight of the L1 loss on log length and width")
    angle_weight: float = Field(1.0, ge=0, le=100, description="weight of the L1 loss on (cos 2θ, sin 2θ)")
    offset_weight: float = Field(1.0, ge=0, le=100, description="weight of the L1 loss on the sub-cell offset")
    end_distance_weight: float = Field(1.0, ge=0, le=100, description="weight of the L1 loss on the log "
                                                                       "distance to the rod's end")
    max_boxes: int = Field(512, ge=1, le=100_000, description="rods per window kept for validation AP")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="CrystalDetector arguments (JSON)")

    @model_validator(mode="after")
    def _check(self) -> "CrystalsOptions":
        if self.image_size is None:
            object.__setattr__(self, "image_size", DETECTOR_IMAGE_SIZES[self.preset])
        if self.data is not None and self.synth is not None:
            raise ValueError("give --data DATASET_DIR or --synth crystals[:PRESET], not both")
        if self.synth is not None:
            parse_synth(self.synth)
        return self


def _crystal_config(options: CrystalsOptions) -> dict[str, Any]:
    from microforge.datasets.crystals.config import CrystalConfig, load_preset

    base = load_preset(parse_synth(options.synth or "crystals")).to_json_dict()
    return CrystalConfig.load({**base, **options.crystal_options}).to_json_dict()


def plan_crystals(options: CrystalsOptions) -> RunPlan:
    """Module config and data of a crystals run.

    Raises:
        ConfigError: an invalid crystal option or window size; DatasetError: a dataset directory
            without a train split or OBB labels.
    """
    from microforge.trainers.data import SyntheticData

    from .data import CrystalManifestData, TileSettings

    module_config = {k: getattr(options, k) for k in (
        "preset", "model_overrides", "image_size", "input_scale", "lr", "weight_decay", "warmup_fraction",
        "min_lr_ratio", "size_weight", "angle_weight", "offset_weight", "end_distance_weight", "max_boxes")}
    tile = {"image_size": options.image_size, "max_boxes": options.max_boxes, "input_scale": options.input_scale}
    TileSettings(**tile)
    if options.data is not None:
        data = CrystalManifestData(options.data, tile=tile, seed=options.seed)
        validates = "val" in data.splits()
    else:
        rendered = {**tile, "windows_per_image": options.windows_per_image}
        # Validation takes samples [0, val_samples): whole images only, so none is also trained on.
        val_samples = -(-options.val_samples // options.windows_per_image) * options.windows_per_image
        data = SyntheticData(renderer=RENDERER, config={"crystal": _crystal_config(options), "tile": rendered},
                             seed=options.seed, train_samples=options.train_samples,
                             val_samples=val_samples, schedule=SCHEDULE, rows_per_task=8)
        validates = options.val_samples > 0
    if validates:
        return RunPlan(module_config, data)
    return RunPlan(module_config, data, monitor="train_loss", mode="min")


CRYSTALS = Workload(
    name="crystals",
    description="oriented-box rod-crystal detector (CenterNet-style) on crystals rendered each epoch or a dataset",
    module="microforge.trainers.detector.lightning:DetectorModule",
    options="microforge.trainers.detector.workload:CrystalsOptions",
    plan="microforge.trainers.detector.workload:plan_crystals",
    presets=("tiny", "small", "standard"),
    metric="val_ap50",
    mode="max",
    components=("model",),
    transform={"name": "unit_range", "params": {}},
    serve_task="detect",
    tune_space="microforge.trainers.detector.workload:SEARCH_SPACE",
    early_stopping_patience=10,
    early_stopping_min_delta=1e-3,
    evaluate="microforge.evaluate.detector_cli:register",
    gradient_clip_val=10.0,
)

# The default space of `microforge tune hparams --workload crystals`.
SEARCH_SPACE = {
    "preset": "tiny",
    "image_size": 256,
    "train_samples": 128,
    "val_samples": 32,
    "lr": {"loguniform": [3.0e-4, 1.0e-2]},
    "weight_decay": {"loguniform": [1.0e-6, 1.0e-3]},
    "size_weight": {"uniform": [0.5, 2.0]},
    "batch_size": {"choice": [8, 16]},
}
