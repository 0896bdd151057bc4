"""Unaligned two-domain data for colorization: the validated folder reader and the renderer."""

from .reader import UnalignedSplit, crop_and_flip, load_a, load_b, load_gt, open_split, split_names
from .render import RENDERER_VERSION, UnalignedConfig, UnalignedSample, render_unaligned

__all__ = ["RENDERER_VERSION", "UnalignedConfig", "UnalignedSample", "UnalignedSplit", "crop_and_flip", "load_a",
           "load_b", "load_gt", "open_split", "render_unaligned", "split_names"]
