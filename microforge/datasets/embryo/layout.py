"""Names of the public embryo time-lapse dataset, in one place: phases, focal planes, archives,
folders, file names, the label of an image and the prompt of a phase.

The real dataset (704 videos) ships as ten files; ``microforge synth embryo`` writes the same
ten, and ``microforge data embryo ...`` reads either.
"""

from __future__ import annotations

import re

from ...platform.config import suggest
from ...platform.errors import ConfigError

# The 16 development phases, in the order an embryo goes through them.
PHASES = ("tPB2", "tPNa", "tPNf", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9+", "tM", "tSB", "tB", "tEB", "tHB")
PHASE_INDEX = {phase: i for i, phase in enumerate(PHASES)}

# Focal planes as named in the archives (micrometres from the reference plane F0).
FOCAL_PLANES = ("F-45", "F-30", "F-15", "F0", "F15", "F30", "F45")
DEFAULT_FOCAL = "F0"

IMAGE_ARCHIVE_PREFIX = "embryo_dataset"
ANNOTATIONS = "embryo_dataset_annotations"
TIME_ELAPSED = "embryo_dataset_time_elapsed"
GRADES_FILE = "embryo_dataset_grades.csv"
GRADES_HEADER = ("video_name", "TE", "ICM")
TIME_HEADER = ("frame", "time")

# One template for training captions and generation prompts: the original used two that differed.
PROMPT_TEMPLATE = "a grayscale microscopic image of a human embryo at phase {phase}"

_FRAME = re.compile(r"_RUN(\d+)\.jpe?g$")


def image_folder(focal: str) -> str:
    """The folder (and archive stem) of a focal plane: ``embryo_dataset`` for F0, else
    ``embryo_dataset_F-15`` and so on."""
    check_focal(focal)
    return IMAGE_ARCHIVE_PREFIX if focal == DEFAULT_FOCAL else f"{IMAGE_ARCHIVE_PREFIX}_{focal}"


def archive_names() -> list[str]:
    """The ten files of the dataset, in a fixed order (images F0 first, then by focal plane)."""
    planes = [DEFAULT_FOCAL] + [f for f in FOCAL_PLANES if f != DEFAULT_FOCAL]
    return ([f"{image_folder(f)}.tar.gz" for f in planes]
            + [f"{ANNOTATIONS}.tar.gz", f"{TIME_ELAPSED}.tar.gz", GRADES_FILE])


def frame_name(video: str, frame: int) -> str:
    """A frame's file name inside its video folder (frames are numbered from 1, as in the phases CSV)."""
    return f"{video}_RUN{frame}.jpeg"


def frame_number(name: str) -> int | None:
    """The frame number of a ``..._RUN<n>.jpeg`` file name, or None for any other name."""
    match = _FRAME.search(name)
    return int(match.group(1)) if match else None


def phases_file(video: str) -> str:
    return f"{video}_phases.csv"


def time_file(video: str) -> str:
    return f"{video}_timeElapsed.csv"


def check_phase(phase: str) -> str:
    """Raises: ConfigError: not one of :data:`PHASES` (with a did-you-mean)."""
    if phase not in PHASE_INDEX:
        raise ConfigError(f"unknown phase '{phase}'{suggest(phase, PHASES)}; valid: {' '.join(PHASES)}")
    return phase


def check_focal(focal: str) -> str:
    """Raises: ConfigError: not one of :data:`FOCAL_PLANES`."""
    if focal not in FOCAL_PLANES:
        raise ConfigError(f"unknown focal plane '{focal}'{suggest(focal, FOCAL_PLANES)}; "
                          f"valid: {', '.join(FOCAL_PLANES)}")
    return focal


def parse_phases(text: str) -> list[str]:
    """``all`` or a comma-separated list like ``t2,t3`` -> phases in development order.

    Raises:
        ConfigError: an unknown or empty phase list.
    """
    if text.strip() == "all":
        return list(PHASES)
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    if not wanted:
        raise ConfigError("--phases must be 'all' or a comma-separated list of phases such as t2,t3")
    for phase in wanted:
        check_phase(phase)
    return [p for p in PHASES if p in wanted]


def focal_label(focal: str) -> str:
    """``F0`` -> ``F+00``, ``F-15`` -> ``F-15``, ``F45`` -> ``F+45`` (the label prefix of the original)."""
    microns = int(check_focal(focal)[1:])
    return f"F{microns:+03d}"


def image_label(focal: str, video: str, frame: int) -> str:
    """The ``label`` of an image-folder row: ``F+00_<video>_<frame>``."""
    return f"{focal_label(focal)}_{video}_{frame}"


def phase_prompt(phase: str) -> str:
    """The caption of a training image and the prompt that generates one, for ``phase``.

    Raises:
        ConfigError: an unknown phase.
    """
    return PROMPT_TEMPLATE.format(phase=check_phase(phase))
