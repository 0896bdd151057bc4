"""Embryo time-lapse data: the renderer of the public dataset's layout and its data tools.

``render_embryo(config, seed, video, frame, frames=F)`` is pure; ``write_archives`` writes the
ten files (``microforge synth embryo``); ``extract_archives``, ``split_videos`` and
``write_image_folder`` are ``microforge data embryo extract|split|image-folder``. ``phase_prompt``
is the one caption/prompt template of training and generation.

The names are imported on first use: the CLI imports this package to register its commands and
should not pay for OpenCV and Ray then.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EmbryoConfig": "config", "load_preset": "config", "preset_names": "config",
    "RENDERER_VERSION": "render", "EmbryoFrame": "render", "render_embryo": "render",
    "FrameScene": "scene", "VideoPlan": "scene", "describe_frame": "scene", "plan_video": "scene",
    "video_name": "scene",
    "write_archives": "archives", "extract_archives": "extract",
    "fair_split": "split", "read_split_file": "split", "split_videos": "split",
    "write_image_folder": "image_folder",
    "FOCAL_PLANES": "layout", "PHASES": "layout", "PHASE_INDEX": "layout", "PROMPT_TEMPLATE": "layout",
    "archive_names": "layout", "phase_prompt": "layout",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
