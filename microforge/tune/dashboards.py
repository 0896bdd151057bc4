"""Where to watch a search: the Ray dashboard and TensorBoard."""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = ["dashboard_url", "tensorboard_command"]


def dashboard_url() -> str | None:
    """The Ray dashboard's URL when this driver's Ray runs one, else None."""
    try:
        import ray._private.worker as worker  # the URL is only on the driver's node object

        node = worker._global_node
        url = node.webui_url if node is not None else None
    except Exception:
        return None
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"


def tensorboard_command(logdir: str | Path) -> str:
    """The shell command that shows every TensorBoard log under ``logdir``."""
    return f"tensorboard --logdir {shlex.quote(str(logdir))}"
