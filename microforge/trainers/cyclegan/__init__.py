"""CycleGAN for colorization (junyanz/pytorch-CycleGAN-and-pix2pix's networks and losses, plus
differentiable GT, SSIM and HSV terms). ``model`` and ``losses`` are plain torch."""

from .losses import DEFAULT_LOSS_WEIGHTS, LOSS_NAMES, parse_loss_weights
from .model import ImagePool, NLayerDiscriminator, ResnetBlock, ResnetGenerator, blocks_for, count_parameters

__all__ = ["DEFAULT_LOSS_WEIGHTS", "ImagePool", "LOSS_NAMES", "NLayerDiscriminator", "ResnetBlock", "ResnetGenerator",
           "blocks_for", "count_parameters", "parse_loss_weights"]
