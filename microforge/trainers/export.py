"""Export a trained module as a multi-component artifact (``save_pretrained`` style).

A module is exportable when it has ``export_components() -> {name: nn.Module}``; each component
must carry ``config``, the JSON constructor arguments that rebuild it (diffusers-style). An
optional ``export_preprocessing() -> dict`` adds what a user of the model must know (image size,
threshold...), and an optional ``export_files(directory)`` writes files beside the card. The
workload supplies the task and the input transform recorded with it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

from microforge.platform.artifact import ComponentWeights, save_artifact
from microforge.platform.errors import ConfigError
from microforge.platform.imports import object_path

from .workload import Workload

__all__ = ["export_artifact", "is_exportable"]

log = logging.getLogger(__name__)


def is_exportable(module: Any) -> bool:
    return callable(getattr(module, "export_components", None))


def export_artifact(module: Any, directory: str | Path, *, workload: Workload | None,
                    metrics: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``module``'s components as an artifact at ``directory`` (atomically replaced).

    Raises:
        ConfigError: the module is not exportable, a component has no JSON ``config``, or the
            components differ from the ones the workload declares.
    """
    import json

    if not is_exportable(module):
        raise ConfigError(f"{type(module).__name__} has no export_components(); nothing to export")
    parts = dict(module.export_components())
    if workload is not None and tuple(parts) != tuple(workload.components):
        raise ConfigError(f"workload '{workload.name}' declares components {list(workload.components)} but "
                          f"{type(module).__name__} exports {list(parts)}")
    components = {}
    for name, component in parts.items():
        config = getattr(component, "config", None)
        try:
            json.dumps(config)
        except (TypeError, ValueError):
            config = None
        if not isinstance(config, dict):
            raise ConfigError(f"component '{name}' ({type(component).__name__}) needs a JSON 'config' dict of its "
                              "constructor arguments to be rebuilt from the artifact")
        components[name] = ComponentWeights(object_path(type(component)), config, component.state_dict())
    preprocessing = module.export_preprocessing() if callable(getattr(module, "export_preprocessing", None)) else {}
    extra_files = getattr(module, "export_files", None)  # optional: files beside the card (tmp dir -> None)
    numeric = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and math.isfinite(v)}
    return save_artifact(directory, components, workload=workload.name if workload else None,
                         task=workload.serve_task if workload else None,
                         transform=dict(workload.transform) if workload else None,
                         preprocessing=preprocessing, metrics=numeric, provenance=dict(provenance or {}),
                         extra_files=extra_files if callable(extra_files) else None)
