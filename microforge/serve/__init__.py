"""Ray Serve deployments behind one FastAPI ingress (HTTP + WebSocket).

Imports are lazy so ``microforge --help`` (which imports :mod:`microforge.serve.cli`) does not
pay for Ray Serve.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ServeConfig", "app_builder", "build_app", "load_serve_config", "run_foreground"]

_EXPORTS = {
    "ServeConfig": "microforge.serve.config",
    "load_serve_config": "microforge.serve.config",
    "app_builder": "microforge.serve.app",
    "build_app": "microforge.serve.app",
    "run_foreground": "microforge.serve.app",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'microforge.serve' has no attribute '{name}'")
