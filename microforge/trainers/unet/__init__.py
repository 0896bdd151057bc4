"""Delineation model: the Attention U-Net and its named sizes.

Plain torch; nothing here imports Ray, so the model can be built and tested alone.
"""

from .model import UNET_PRESETS, AttentionGate, AttentionUNet, BlurPool2d, CBAM, unet_from_preset

__all__ = ["AttentionGate", "AttentionUNet", "BlurPool2d", "CBAM", "UNET_PRESETS", "unet_from_preset"]
