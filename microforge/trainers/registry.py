"""Rebuild an artifact's components: ``load_artifact(dir)`` from the directory alone.

Each component's class is an import path recorded in ``model.json`` (format 1 artifacts name a
class by a short name, which the workload that wrote it maps through ``legacy_names``). Only
``torch.nn.Module`` subclasses are built, from their JSON config: an artifact can name which
installed class to build, never run code of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microforge.platform.artifact import ArtifactCard, ArtifactError, read_artifact
from microforge.platform.errors import ConfigError
from microforge.platform.imports import import_object
from microforge.platform.transforms import Transform, transform_from_spec

from .workload import legacy_owner

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LoadedArtifact", "load_artifact", "load_model", "resolve_component_class"]


@dataclass(frozen=True)
class LoadedArtifact:
    """An artifact's card, its transform and its components (eval mode, on the CPU)."""

    card: ArtifactCard
    components: dict[str, "nn.Module"]
    transform: Transform
    workload: str | None
    task: str | None

    def __getitem__(self, name: str) -> "nn.Module":
        try:
            return self.components[name]
        except KeyError:
            raise ArtifactError(f"the artifact has no component '{name}' (it has {', '.join(self.components)})") \
                from None

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.card.preprocessing

    @property
    def metrics(self) -> dict[str, Any]:
        return self.card.metrics


def resolve_component_class(cls_name: str) -> type:
    """The ``nn.Module`` class an artifact names (an import path, or a format-1 short name).

    Raises:
        ArtifactError: the name does not resolve, or not to an ``nn.Module`` subclass.
    """
    import torch

    path = cls_name
    if ":" not in cls_name:
        owner = legacy_owner(cls_name)
        if owner is None:
            raise ArtifactError(f"unknown model class '{cls_name}' (no registered workload knows it)")
        path = owner[1]
    try:
        cls = import_object(path, "model class")
    except ConfigError as exc:
        raise ArtifactError(str(exc)) from None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ArtifactError(f"model class '{cls_name}' is not a torch.nn.Module")
    return cls


def load_artifact(directory: str | Path) -> LoadedArtifact:
    """Read, verify and rebuild every component of an artifact directory.

    Raises:
        ArtifactError: a missing or corrupt file (naming the component), an unknown class, a config
            that does not fit the class, weights that do not fit the module, or a bad transform.
    """
    card, states = read_artifact(directory)
    components = {}
    for name, component in card.components.items():
        cls = resolve_component_class(component.cls)
        try:
            module = cls(**component.config)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"model artifact {directory}: cannot rebuild component '{name}' "
                                f"({component.cls}: {exc})") from None
        try:
            module.load_state_dict(states[name], strict=True)
        except RuntimeError as exc:
            first = " ".join(str(exc).strip().splitlines()[0:2])
            raise ArtifactError(f"model artifact {directory}: weights do not fit component '{name}' "
                                f"({component.cls}: {first})") from None
        components[name] = module.eval()
    workload, task, transform = card.workload, card.task, card.transform
    if card.format_version == 1:  # the workload that owns the class fills in what format 1 lacked
        owner = legacy_owner(next(iter(card.components.values())).cls)
        if owner is not None:
            workload, task, transform = owner[0].name, owner[0].serve_task, dict(owner[0].transform)
    try:
        resolved = transform_from_spec(transform)
    except ConfigError as exc:
        raise ArtifactError(f"model artifact {directory}: {exc}") from None
    return LoadedArtifact(card, components, resolved, workload, task)


def load_model(directory: str | Path) -> "nn.Module":
    """The only component of a single-component artifact (e.g. a U-Net).

    Raises:
        ArtifactError: see :func:`load_artifact`; or the artifact has several components.
    """
    loaded = load_artifact(directory)
    if len(loaded.components) != 1:
        raise ArtifactError(f"model artifact {directory} has components {', '.join(loaded.components)}: "
                            "use load_artifact() and pick one")
    return next(iter(loaded.components.values()))
