"""Configuration of the CARS tissue renderer and its shipped presets.

Intensities before detection are in *signal units*: 1.0 is a bright follicle wall. The detector
turns signal ``s`` into ``Poisson(s * photons_per_unit)`` photons, scales them to
``adu_per_unit`` ADU per signal unit, adds ``dark_offset_adu`` and Gaussian read noise, and
saturates at ``saturation_adu`` (at most 65535, the top of ``uint16``).

Counts and densities are given per 512 x 512 px and scale with the image area, so ``size``
changes the field of view, not the magnification. A range field ``(lo, hi)`` is sampled
uniformly per image or per object, as its description says.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from microforge.platform.config import ConfigModel, FloatRange, IntRange, suggest
from microforge.platform.errors import ConfigError

MAX_SIZE = 8192
# Follicle labels are stored in uint16 masks.
MAX_FOLLICLES = 65535


def _between(lo: float, hi: float):
    """Validator: both ends of a range lie in [lo, hi]."""

    def check(value: tuple) -> tuple:
        if any(x < lo or x > hi for x in value):
            raise ValueError(f"values must lie in [{lo}, {hi}], got {list(value)}")
        return value

    return AfterValidator(check)


Level = Annotated[FloatRange, _between(0.0, 100.0)]
Pixels = Annotated[FloatRange, _between(0.5, 1024.0)]


def _f(default, description: str, **bounds):
    """``Field`` with its description: every field is documented."""
    return Field(default, description=description, **bounds)


class CarsConfig(ConfigModel):
    """Every knob of :func:`~microforge.datasets.cars.render_cars`; defaults = ``default`` preset."""

    size: int = _f(512, "Image side in pixels (square images).", ge=16, le=MAX_SIZE)

    # Follicles: closed irregular rings (wall) around a colloid lumen
    follicle_count: Annotated[IntRange, _between(0, 4096)] = _f(
        (22, 34), "Follicles placed per 512 x 512 px (scaled by image area), drawn per image; "
                  "fewer when the packing leaves no room.")
    follicle_radius_px: Pixels = _f((22.0, 46.0), "Mean follicle radius (px), per follicle.")
    follicle_irregularity: float = _f(0.12, "Amplitude of the random 2nd-4th harmonics of the "
                                            "follicle outline, as a fraction of its radius.", ge=0, le=0.5)
    follicle_packing: float = _f(0.85, "Smallest centre distance of two follicles as a multiple of the "
                                       "sum of their radii: < 1 presses neighbours into shared walls, "
                                       "> 1 leaves interstitium between them.", ge=0.3, le=3.0)
    wall_thickness_px: Pixels = _f((2.0, 3.5), "Epithelial wall thickness (px) inside the follicle "
                                               "outline, per follicle.")
    wall_brightness: Level = _f((0.65, 1.1), "Wall signal (signal units), per follicle.")
    wall_texture: float = _f(0.35, "Relative modulation of the wall signal by fine-grained noise.",
                             ge=0, le=2)
    colloid_level: Level = _f((0.1, 0.2), "Colloid (lumen) signal, per follicle.")
    colloid_texture: float = _f(0.15, "Relative modulation of the colloid signal by fine-grained noise.",
                                ge=0, le=2)

    # Lipid droplets: small bright discs anywhere
    droplet_density: float = _f(14.0, "Expected lipid droplets per 512 x 512 px (Poisson per image).",
                                ge=0, le=10000)
    droplet_radius_px: Pixels = _f((1.0, 2.6), "Droplet radius (px), per droplet.")
    droplet_brightness: Level = _f((1.6, 3.2), "Droplet signal added on top of the tissue, per droplet.")

    # Interstitium and non-resonant background
    interstitial_level: float = _f(0.16, "Interstitial tissue signal between follicles.", ge=0, le=100)
    interstitial_texture: float = _f(0.3, "Relative modulation of the interstitium by coarse noise "
                                          "(about 8 px grain).", ge=0, le=2)
    nonresonant_offset: float = _f(0.08, "Non-resonant background signal added everywhere.", ge=0, le=100)

    # Laser-scanning artefacts and optics
    line_jitter_px: float = _f(0.6, "Std (px) of each scan line's horizontal shift (rounded to whole px).",
                               ge=0, le=64)
    stripe_gain: float = _f(0.03, "Std of each scan line's relative gain (laser power fluctuation).",
                            ge=0, le=0.5)
    psf_sigma_px: float = _f(1.0, "Gaussian PSF sigma (px) of the optical blur; 0 = none.", ge=0, le=32)

    # Detection
    photons_per_unit: float = _f(150.0, "Photon budget: expected photons at signal 1.0 (Poisson shot "
                                        "noise; fewer photons = noisier).", gt=0, le=1e6)
    adu_per_unit: float = _f(12000.0, "Detector output (ADU) at signal 1.0.", gt=0, le=65535)
    dark_offset_adu: float = _f(600.0, "Constant detector offset (ADU).", ge=0, le=65535)
    read_noise_adu: float = _f(120.0, "Std (ADU) of Gaussian read noise.", ge=0, le=65535)
    saturation_adu: int = _f(65535, "Saturation level (ADU): values are clipped here.", ge=1, le=65535)


def _presets_dir():
    return resources.files(__package__) / "presets"


def preset_names() -> list[str]:
    """Names of the shipped presets: ``default``, ``dense``, ``low_signal``, ``sparse``."""
    return sorted(p.name[:-5] for p in _presets_dir().iterdir() if p.name.endswith(".json"))


def load_preset(name: str | Path) -> CarsConfig:
    """A shipped preset by name, or a JSON/YAML config file by path.

    Raises:
        ConfigError: unknown preset (the message lists the valid ones), a missing or invalid file.
    """
    if Path(name).suffix.lower() in (".json", ".yaml", ".yml") or len(Path(name).parts) > 1:
        return CarsConfig.load(name)
    if str(name) not in preset_names():
        raise ConfigError(f"unknown cars preset '{name}'{suggest(str(name), preset_names())}; valid presets: "
                          f"{', '.join(preset_names())}, or a path to a .json/.yaml file")
    with resources.as_file(_presets_dir() / f"{name}.json") as path:
        return CarsConfig.load(path)
