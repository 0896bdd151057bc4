"""DIC rod-crystal renderer with oriented-box labels.

``render_crystal(config, seed, index)`` is pure and deterministic; ``load_preset`` gives the
shipped presets (``default``, ``standard``) or reads a JSON/YAML preset file.
"""

from .config import CrystalConfig, load_preset, preset_names
from .dataset import generate_dataset
from .render import RENDERER_VERSION, CrystalSample, render_crystal
from .schedule import StageParams, lambda_to_t, params_for_t, sample_lambda

__all__ = [
    "RENDERER_VERSION",
    "CrystalConfig",
    "CrystalSample",
    "StageParams",
    "generate_dataset",
    "lambda_to_t",
    "load_preset",
    "params_for_t",
    "preset_names",
    "render_crystal",
    "sample_lambda",
]
