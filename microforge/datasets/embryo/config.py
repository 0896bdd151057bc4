"""Configuration of the embryo time-lapse renderer and its shipped presets.

Lengths are fractions of the image side unless a name says ``px``, so ``size`` changes the
resolution, not the scene. Phase durations are hours of a typical embryo; a video's frames are
spread over the phases it reaches, so every video covers its development whatever ``--frames``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pydantic import Field, field_validator

from microforge.platform.config import ConfigModel, FloatRange, IntRange, suggest
from microforge.platform.errors import ConfigError

from .layout import PHASES

# Typical hours spent in each phase (onsets after insemination of ~3.5 h tPB2, 26 h t2, 38 h t4,
# 57 h t8, 84 h tM, 106 h tB, 125 h tHB): the shortest (t3, t5, t6, t7) are the rarest frames.
DEFAULT_PHASE_HOURS = {"tPB2": 5.0, "tPNa": 15.0, "tPNf": 2.5, "t2": 10.5, "t3": 1.5, "t4": 11.0, "t5": 2.5,
                       "t6": 2.5, "t7": 3.0, "t8": 9.0, "t9+": 18.0, "tM": 13.0, "tSB": 9.0, "tB": 7.0,
                       "tEB": 12.0, "tHB": 15.0}
# Where recordings end: most embryos reach a blastocyst, few hatch, some arrest earlier.
DEFAULT_FINAL_PHASE = {"t8": 0.03, "t9+": 0.04, "tM": 0.08, "tSB": 0.08, "tB": 0.17, "tEB": 0.35, "tHB": 0.25}


def _f(default, description: str, **bounds):
    """``Field`` with its description: every field is documented."""
    return Field(default, description=description, **bounds)


class EmbryoConfig(ConfigModel):
    """Every knob of :func:`~microforge.datasets.embryo.render_embryo`; defaults = ``default`` preset."""

    size: int = _f(500, "Image side in pixels (square grayscale frames).", ge=64, le=4096)
    jpeg_quality: int = _f(90, "JPEG quality of the frames.", ge=10, le=100)

    # Development schedule
    phase_hours: dict[str, float] = _f(DEFAULT_PHASE_HOURS, "Typical hours in each of the 16 phases.")
    duration_jitter: float = _f(0.25, "Std of the log-normal factor on each phase's duration, per video.",
                                ge=0, le=2)
    final_phase: dict[str, float] = _f(DEFAULT_FINAL_PHASE, "Relative probability that a video's last "
                                                            "annotated phase is each phase named.")
    skip_transient: float = _f(0.12, "Probability that each of the brief phases t3, t5, t6, t7 is skipped "
                                     "(synchronous cleavage), per video.", ge=0, le=1)
    missing_tpb2: float = _f(0.08, "Probability that a recording starts after tPB2 (no tPB2 rows).", ge=0, le=1)
    lead_frames: IntRange = _f((0, 3), "Unannotated frames before the first phase, per video.")
    start_hours: FloatRange = _f((0.0, 1.5), "Time of the first frame (hours after insemination), per video.")

    # Geometry (fractions of the image side)
    zona_radius: FloatRange = _f((0.33, 0.38), "Outer radius of the zona pellucida, per video.")
    zona_thickness: float = _f(0.035, "Zona thickness before expansion thins it.", gt=0, le=0.2)
    centre_jitter: float = _f(0.04, "Largest offset of the embryo from the image centre.", ge=0, le=0.2)
    cell_aspect: FloatRange = _f((0.85, 1.0), "Minor/major axis ratio of each blastomere.")

    # Appearance (intensities in [0, 1] before JPEG)
    background: float = _f(0.62, "Medium intensity around the embryo.", ge=0, le=1)
    cytoplasm: float = _f(0.42, "Mean intensity of cytoplasm.", ge=0, le=1)
    granularity: float = _f(0.05, "Amplitude of the granular cytoplasm texture.", ge=0, le=0.5)
    shading: float = _f(0.06, "Darkening from the centre to the edge of each cell (spherical look).",
                        ge=0, le=0.5)
    rim_contrast: float = _f(0.22, "Darkening of cell and zona edges.", ge=0, le=1)
    cavity_level: float = _f(0.58, "Intensity of the blastocoel fluid.", ge=0, le=1)
    noise: float = _f(0.015, "Std of the Gaussian camera noise, per focal plane.", ge=0, le=0.5)
    defocus_px: float = _f(2.2, "Gaussian blur sigma (px at 500 px) per 15 um away from F0.", ge=0, le=50)
    halo: float = _f(0.6, "Relief contrast that flips sign across the focus (Hoffman-like optics).",
                     ge=0, le=5)

    # Annotations
    grade_na: float = _f(0.15, "Probability that a video's TE and ICM grades are 'NA'.", ge=0, le=1)

    @field_validator("phase_hours")
    @classmethod
    def _every_phase(cls, value: dict[str, float]) -> dict[str, float]:
        missing = [p for p in PHASES if p not in value]
        unknown = [p for p in value if p not in PHASES]
        if unknown:
            raise ValueError(f"unknown phase '{unknown[0]}'{suggest(unknown[0], PHASES)}")
        if missing:
            raise ValueError(f"missing phase(s) {', '.join(missing)}; give hours for all 16")
        if any(not 0 < h <= 1000 for h in value.values()):
            raise ValueError("hours must lie in (0, 1000]")
        return {p: float(value[p]) for p in PHASES}

    @field_validator("final_phase")
    @classmethod
    def _final_phases(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [p for p in value if p not in PHASES]
        if unknown:
            raise ValueError(f"unknown phase '{unknown[0]}'{suggest(unknown[0], PHASES)}")
        if any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        return {p: float(value[p]) for p in PHASES if p in value}


def _presets_dir():
    return resources.files(__package__) / "presets"


def preset_names() -> list[str]:
    """Names of the shipped presets: ``default`` (500 px) and ``tiny`` (128 px, for tests and demos)."""
    return sorted(p.name[:-5] for p in _presets_dir().iterdir() if p.name.endswith(".json"))


def load_preset(name: str | Path) -> EmbryoConfig:
    """A shipped preset by name, or a JSON/YAML config file by path.

    Raises:
        ConfigError: unknown preset (the message lists the valid ones), a missing or invalid file.
    """
    if Path(name).suffix.lower() in (".json", ".yaml", ".yml") or len(Path(name).parts) > 1:
        return EmbryoConfig.load(name)
    if str(name) not in preset_names():
        raise ConfigError(f"unknown embryo preset '{name}'{suggest(str(name), preset_names())}; valid presets: "
                          f"{', '.join(preset_names())}, or a path to a .json/.yaml file")
    with resources.as_file(_presets_dir() / f"{name}.json") as path:
        return EmbryoConfig.load(path)
