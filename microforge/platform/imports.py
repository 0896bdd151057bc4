"""The one resolver of ``"package.module:Attribute"`` import paths.

Workloads, renderers, schedules, artifact components and data classes are all named by such
paths, so that a name travels as JSON (run records, artifacts, Ray task arguments) and each
process imports only what it uses.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError

__all__ = ["import_object", "object_path"]


def import_object(path: str, what: str = "object") -> Any:
    """Import ``"package.module:Attribute"`` (dots after the colon walk attributes).

    Raises:
        ConfigError: a malformed path, a module that does not exist, or a missing attribute.
            An import error *inside* an existing module is re-raised as it is (a real bug).
    """
    if not isinstance(path, str):
        raise ConfigError(f"{what} must be an import path 'package.module:Attribute', got {path!r}")
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} '{path}' is not of the form 'package.module:Attribute'")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"{what} '{path}': module '{module_name}' cannot be imported") from None
        raise
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{what} '{path}': '{module_name}' has no attribute '{attr}'") from None
    return target


def object_path(obj: Any) -> str:
    """The import path of a class or function (the inverse of :func:`import_object`)."""
    return f"{obj.__module__}:{obj.__qualname__}"
