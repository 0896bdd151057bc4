"""FastGAN (Liu et al., ICLR 2021): generator, discriminator, DiffAugment, named sizes.

Plain torch; nothing here imports Ray or Lightning, so the model can be built and tested alone.
"""

from .diffaugment import diff_augment
from .model import (
    FASTGAN_SIZES,
    RESOLUTIONS,
    Discriminator,
    Generator,
    build_discriminator,
    build_generator,
    count_parameters,
    crop_part,
    reconstruction_targets,
    weights_init,
)

__all__ = [
    "Discriminator",
    "FASTGAN_SIZES",
    "Generator",
    "RESOLUTIONS",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "crop_part",
    "diff_augment",
    "reconstruction_targets",
    "weights_init",
]
