"""The ``fastgan`` workload: FastGAN on 16-bit CARS images, rendered on the fly or from a dataset.

Images reach the GAN through the recorded ``signed_unit`` transform (integers divided by their
dtype's maximum, mapped to [-1, 1]); prepare raw 16-bit data first (``microforge data prepare``)
so that its intensities use the range. Validation renders (or reads) held-out real images and
reports ``val_fd``, the texture Fréchet distance of EMA samples to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator

from microforge.platform.config import ConfigModel
from microforge.platform.errors import ConfigError
from microforge.trainers.workload import Cadence, RunPlan, Workload

from .data import TRANSFORM

__all__ = ["FASTGAN", "FastganOptions", "SEARCH_SPACE", "plan_fastgan"]


class FastganOptions(ConfigModel):
    """Options of ``microforge train fastgan``."""

    size: Literal["micro", "small", "standard", "large", "xlarge"] = Field(
        "micro", description="model size: ngf = ndf = 32, 48, 64, 96, 128")
    resolution: Literal[256, 512, 1024] = Field(256, description="image side in pixels")
    channels: Literal[1, 3] = Field(1, description="image channels")
    nz: int = Field(256, ge=8, le=1024, description="latent size")
    width: Optional[int] = Field(None, ge=4, le=512, description="ngf = ndf, overriding the size's (small CPU runs)")
    lr_g: float = Field(2e-4, gt=0, le=1, description="generator Adam learning rate")
    lr_d: float = Field(2e-4, gt=0, le=1, description="discriminator Adam learning rate")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="generator EMA decay")
    augment: str = Field("translation,cutout", description="DiffAugment policy (color, translation, cutout)")
    pad_mode: Literal["reflect", "zeros"] = Field("reflect", description="translation padding")
    recon_weight: float = Field(1.0, ge=0, le=100, description="weight of the decoders' reconstruction loss")
    fm_weight: float = Field(0.0, ge=0, le=1000, description="feature-matching weight in the generator loss (0: off)")
    penalty: Literal["r1", "wgan-gp"] = Field("r1", description="discriminator gradient penalty")
    penalty_weight: float = Field(0.0, ge=0, le=1000, description="gradient-penalty weight (0: off)")
    preset: Optional[Literal["baseline", "improved", "fast", "high_quality"]] = Field(
        None, description="training recipe (size, batch size, loss weights, learning rates); explicit flags win")
    sample_images: int = Field(16, ge=0, le=64, description="EMA samples in each validation's grid (0: none)")
    data: Optional[str] = Field(None, description="train on this dataset directory (manifest image column; "
                                                  "its val split is held out for val_fd) instead of renders")
    synth: str = Field("cars:default", description="render training images on the fly: cars[:PRESET]")
    train_samples: int = Field(64, ge=1, le=10_000_000, description="rendered images per epoch")
    val_samples: int = Field(16, ge=0, le=100_000, description="held-out renders for val_fd (0: none)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="data and initial-weight seed")

    @model_validator(mode="after")
    def _synth_kind(self) -> "FastganOptions":
        kind, _, _ = self.synth.partition(":")
        if kind != "cars":
            raise ValueError(f"synth '{self.synth}': only cars[:PRESET] renders FastGAN training data")
        return self


def plan_fastgan(options: FastganOptions) -> RunPlan:
    """Module config and data of a FastGAN run.

    Raises:
        ConfigError: an unknown CARS preset, or a dataset without an image column.
    """
    from microforge.datasets.cars import load_preset
    from microforge.trainers.data import SyntheticData
    from microforge.trainers.manifest_data import ManifestData

    config = options.to_json_dict()
    module_config = {k: config[k] for k in ("size", "resolution", "channels", "nz", "width", "lr_g", "lr_d",
                                            "ema_decay", "augment", "pad_mode", "recon_weight", "fm_weight",
                                            "penalty", "penalty_weight", "sample_images")}
    module_config["fd_samples"] = max(2, options.val_samples)
    if options.data is not None:
        data = ManifestData(options.data, columns=("image", "index"), transform=TRANSFORM)
        has_val = "val" in data.splits()
        _check_channels(options.channels, _first_image_channels(data.dataset_dir), options.data)
    else:
        _check_channels(options.channels, 1, f"synth {options.synth} (CARS renders)")
        preset = options.synth.partition(":")[2] or "default"
        cars = load_preset(preset).model_copy(update={"size": options.resolution})
        data = SyntheticData(renderer="microforge.trainers.fastgan.data:render_cars_batch",
                             config=cars.to_json_dict(), seed=options.seed, train_samples=options.train_samples,
                             val_samples=options.val_samples)
        has_val = options.val_samples > 0
    return RunPlan(module_config, data) if has_val else RunPlan(module_config, data, monitor="d_recon", mode="min")


def _first_image_channels(dataset_dir: str) -> int | None:
    """Channels of the dataset's first image file (None when its images are not plain files)."""
    from microforge.datasets.manifest import decode_image, read_manifest

    table = read_manifest(dataset_dir)
    first = table.column("image")[0].as_py() if table.num_rows else None
    path = Path(dataset_dir) / str(first)
    if not isinstance(first, str) or not path.is_file():
        return None
    image = decode_image(path)
    return 1 if image.ndim == 2 else int(image.shape[-1])


def _check_channels(model: int, data: int | None, source: str) -> None:
    if data is not None and data != model:
        raise ConfigError(f"a {model}-channel FastGAN cannot train on the {data}-channel images of {source}: "
                          f"use --channels {data}")


FASTGAN = Workload(
    name="fastgan",
    description="FastGAN (skip-layer excitation, self-supervised decoders, DiffAugment) on 16-bit CARS images",
    module="microforge.trainers.fastgan.lightning:FastGANModule",
    options="microforge.trainers.fastgan.workload:FastganOptions",
    plan="microforge.trainers.fastgan.workload:plan_fastgan",
    presets=("micro", "small", "standard", "large", "xlarge"),
    metric="val_fd",
    mode="min",
    optimization="manual",
    cadence=Cadence(every=200, unit="steps"),
    components=("generator_ema", "generator", "discriminator"),
    transform=TRANSFORM,
    serve_task="generate",
    preset_option="size",
    size_option="resolution",
    gradient_clip_val=None,
    recipes="microforge.trainers.fastgan.presets",
    tune_space="microforge.trainers.fastgan.workload:SEARCH_SPACE",
)

# The default search: the two learning rates (what PBT perturbs, after Ray's PBT DCGAN example).
SEARCH_SPACE = {
    "size": "micro",
    "resolution": 256,
    "lr_g": {"loguniform": [5.0e-5, 1.0e-3]},
    "lr_d": {"loguniform": [5.0e-5, 1.0e-3]},
}
