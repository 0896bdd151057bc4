"""The ``cyclegan`` workload: grayscale cell images (A) colorized into H&E-like histology (B).

Data: an unaligned dataset folder (``--data``: ``trainA/ trainB/ [trainA_GT/] testA/ testB/
[testA_GT/]`` or ``A/ B/ [A_GT/]`` with ``--split``), validated on the driver before anything is
written; or two-domain renders made on the fly. ``val_*`` metrics come from the test split (or
held-out renders); ``microforge eval cyclegan`` scores every epoch's snapshot afterwards.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from microforge.platform.config import ConfigModel
from microforge.trainers.workload import Cadence, RunPlan, Workload

from .data import TRANSFORM
from .losses import DEFAULT_LOSS_WEIGHTS, LOSS_NAMES, parse_loss_weights

__all__ = ["CYCLEGAN", "CycleganOptions", "SEARCH_SPACE", "plan_cyclegan"]


class CycleganOptions(ConfigModel):
    """Options of ``microforge train cyclegan``."""

    preset: Literal["reference", "small"] = Field("reference", description="model width: ngf = ndf = 64 or 32")
    size: Literal[64, 128, 256] = Field(128, description="training image side (px)")
    width: Optional[int] = Field(None, ge=1, le=256, description="ngf = ndf, overriding the preset's (small CPU runs)")
    n_blocks: Optional[int] = Field(None, ge=1, le=32, description="generator residual blocks (default 9 at 256 px, "
                                                                   "else 6)")
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate of generators and discriminators")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
    lambda_a: float = Field(10.0, ge=0, le=1000, description="cycle weight A -> B -> A")
    lambda_b: float = Field(10.0, ge=0, le=1000, description="cycle weight B -> A -> B")
    lambda_identity: float = Field(0.5, ge=0, le=10, description="identity weight, relative to the cycle weights")
    pool_size: int = Field(50, ge=0, le=10_000, description="image pool of past fakes (0: none)")
    decay_epochs: Optional[int] = Field(None, ge=0, description="epochs of linear LR decay at the end (default: "
                                                                "half of --epochs)")
    loss_weights: Optional[str] = Field(None, description="colorization loss weights, e.g. gt=5,colorvar=5,hsv=10 "
                                                          "(sets the *_weight options)")
    gt_weight: float = Field(DEFAULT_LOSS_WEIGHTS["gt"], ge=0, le=1000, description="weight of the soft GT loss")
    colorvar_weight: float = Field(DEFAULT_LOSS_WEIGHTS["colorvar"], ge=0, le=1000,
                                   description="weight of the SSIM colour-variation loss")
    hsv_weight: float = Field(DEFAULT_LOSS_WEIGHTS["hsv"], ge=0, le=1000, description="weight of the HSV histogram loss")
    gt_threshold: float = Field(0.5, gt=0, lt=1, description="output luminance below which a pixel is a nucleus")
    data: Optional[str] = Field(None, description="unaligned dataset directory (trainA/trainB[/trainA_GT]/testA/"
                                                  "testB or A/B[/A_GT]); default: renders made on the fly")
    split: str = Field("0.8,0,0.2", description="train,val,test fractions of an A/ B/ dataset")
    invert_a: bool = Field(False, description="invert domain A (bright cells become dark, GOWT1-style)")
    load_size: Optional[int] = Field(None, ge=16, le=4096, description="resize before the random crop (default "
                                                                       "size * 286 / 256)")
    train_samples: int = Field(64, ge=1, le=10_000_000, description="rendered samples per epoch (renders only)")
    val_samples: int = Field(8, ge=0, le=100_000, description="held-out samples for val_* metrics (0: none)")
    snapshot_every: int = Field(1, ge=0, le=10_000, description="write an epoch artifact every N epochs for "
                                                                "eval cyclegan (0: never)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="data, pool and initial-weight seed")

    @model_validator(mode="before")
    @classmethod
    def _spread_loss_weights(cls, data: Any) -> Any:
        # --loss-weights is a shorthand: it sets the *_weight fields (which Tune searches) and is
        # not stored itself, so a run records one canonical set of weights.
        if isinstance(data, dict) and data.get("loss_weights") is not None:
            given = parse_loss_weights(data["loss_weights"])
            clash = [n for n in given if f"{n}_weight" in data and float(data[f"{n}_weight"]) != given[n]]
            if clash:
                raise ValueError(f"loss_weights sets {clash[0]}={given[clash[0]]} but {clash[0]}_weight is "
                                 f"{data[clash[0] + '_weight']}")
            data = {**data, **{f"{n}_weight": w for n, w in given.items()}, "loss_weights": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> "CycleganOptions":
        from microforge.datasets.writer import parse_split

        parse_split(self.split)
        if self.load_size is not None and self.load_size < self.size:
            raise ValueError(f"load_size {self.load_size} is smaller than size {self.size}")
        return self

    def weights(self) -> dict[str, float]:
        return {n: float(getattr(self, f"{n}_weight")) for n in LOSS_NAMES}


def plan_cyclegan(options: CycleganOptions) -> RunPlan:
    """Module config and data of a CycleGAN run.

    Raises:
        DatasetError: a dataset folder that does not validate (naming the file at fault).
    """
    from microforge.datasets.unaligned import UnalignedConfig, open_split, split_names
    from microforge.datasets.writer import parse_split
    from microforge.trainers.data import SyntheticData

    keys = ("preset", "size", "width", "n_blocks", "lr", "beta1", "lambda_a", "lambda_b", "lambda_identity",
            "pool_size", "decay_epochs", "gt_threshold", "invert_a", "seed", "snapshot_every")
    module_config = {k: getattr(options, k) for k in keys}
    module_config["loss_weights"] = options.weights()
    if options.data is None:
        data = SyntheticData(renderer="microforge.trainers.cyclegan.data:render_unaligned_batch",
                             config=UnalignedConfig(size=options.size).to_json_dict(), seed=options.seed,
                             train_samples=options.train_samples, val_samples=options.val_samples,
                             val_kwargs={"invert_a": options.invert_a}, rows_per_task=8)
        has_val = options.val_samples > 0
    else:
        fractions = parse_split(options.split)
        train = open_split(options.data, "train", fractions=fractions)
        test = open_split(options.data, "test", fractions=fractions) if "test" in split_names(options.data) else None
        val = min(options.val_samples, len(test.a)) if test is not None else 0
        config = {"dataset_dir": train.root, "fractions": list(fractions), "size": options.size,
                  "load_size": options.load_size or round(options.size * 286 / 256), "invert_a": options.invert_a,
                  "offset": val}
        # One epoch visits every A image once; validation reads the test split without augmentation.
        data = SyntheticData(renderer="microforge.trainers.cyclegan.data:read_unaligned_batch", config=config,
                             seed=options.seed, train_samples=len(train.a), val_samples=val,
                             val_kwargs={"split": "test"}, rows_per_task=8)
        has_val = val > 0
    return RunPlan(module_config, data) if has_val else RunPlan(module_config, data, monitor="cycle", mode="min")


# The default search of ``microforge tune hparams --trainer cyclegan``: the colorization weights and lr.
SEARCH_SPACE = {
    "lr": {"loguniform": [5e-5, 1e-3]},
    "gt_weight": {"uniform": [0.0, 10.0]},
    "colorvar_weight": {"uniform": [0.0, 10.0]},
    "hsv_weight": {"uniform": [0.0, 20.0]},
}

CYCLEGAN = Workload(
    name="cyclegan",
    description="CycleGAN colorization (grayscale cells -> H&E-like) with differentiable GT, SSIM and HSV losses",
    module="microforge.trainers.cyclegan.lightning:CycleGANModule",
    options="microforge.trainers.cyclegan.workload:CycleganOptions",
    plan="microforge.trainers.cyclegan.workload:plan_cyclegan",
    presets=("small", "reference"),
    metric="val_fd",
    mode="min",
    optimization="manual",
    cadence=Cadence(every=1, unit="epochs"),
    components=("generator_ab", "generator_ba", "discriminator_a", "discriminator_b"),
    transform=TRANSFORM,
    serve_task="colorize",
    tune_space="microforge.trainers.cyclegan.workload:SEARCH_SPACE",
    size_option="size",
    evaluate="microforge.evaluate.cyclegan_cli:register",
    gradient_clip_val=None,
)
