"""Model artifacts: self-describing, multi-component directories, verified on load.

In the spirit of diffusers' ``model_index.json``, ``model.json`` lists the artifact's named
components; each names its class (an import path, or a name registered with the trainers'
registry), the JSON config its constructor takes, and its weights file with a SHA-256::

    model.json                {"format_version": 2, "workload", "task", "transform",
                               "components": {"generator": {"class", "config", "weights", "sha256"}, ...},
                               "preprocessing", "metrics", "provenance"}
    generator.safetensors     one weights file per component
    discriminator.safetensors

``transform`` is the named input transform (see :mod:`microforge.platform.transforms`) that
training used and that eval, generation and Serve apply. Artifacts of format_version 1 (one
``model.safetensors`` described by ``architecture: {name, config}``) still load: they read as a
single component named ``model``.

This module reads and writes files only; rebuilding the modules is
:func:`microforge.trainers.registry.load_artifact`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import MicroforgeError
from .storage import atomic_replace_dir

__all__ = ["ArtifactCard", "ArtifactError", "CARD_FILE", "Component", "ComponentWeights", "FORMAT_VERSION",
           "read_artifact", "read_card", "save_artifact"]

FORMAT_VERSION = 2
CARD_FILE = "model.json"
LEGACY_WEIGHTS_FILE = "model.safetensors"
LEGACY_COMPONENT = "model"
_COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ArtifactError(MicroforgeError):
    """A model artifact directory is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class Component:
    """One component as ``model.json`` records it."""

    name: str
    cls: str
    config: dict[str, Any]
    weights: str
    sha256: str


@dataclass(frozen=True)
class ComponentWeights:
    """What :func:`save_artifact` writes for one component: class, constructor config, state dict."""

    cls: str
    config: Mapping[str, Any]
    state_dict: Mapping[str, Any]


@dataclass(frozen=True)
class ArtifactCard:
    """The contents of ``model.json``.

    Attributes:
        workload: the workload that trained it (None for format 1 artifacts).
        task: the Serve task it offers (``segment``, ``detect``, ``generate``, ``colorize``) or None.
        components: component name -> :class:`Component`, in the order they were saved.
        transform: the input transform spec ``{"name", "params"}`` (None: ``unit_range``).
    """

    components: dict[str, Component]
    workload: str | None = None
    task: str | None = None
    transform: dict[str, Any] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def save_artifact(directory: str | Path, components: Mapping[str, ComponentWeights], *, workload: str | None,
                  task: str | None, transform: Mapping[str, Any] | None, preprocessing: Mapping[str, Any],
                  metrics: Mapping[str, Any], provenance: Mapping[str, Any],
                  extra_files: Callable[[Path], None] | None = None) -> Path:
    """Write an artifact directory atomically (a temp directory renamed into place).

    An existing directory at ``directory`` is replaced only once the new one is complete.
    ``extra_files(tmp)`` may add files beside the card (e.g. a library's own layout of the same
    weights); they are not part of the verified components.

    Raises:
        ValueError: no components, a component name that is not ``[a-z][a-z0-9_]*``, or a config
            that is not JSON.
    """
    from safetensors.torch import save_file

    if not components:
        raise ValueError("an artifact needs at least one component")
    for name, part in components.items():
        if not _COMPONENT_NAME.match(name):
            raise ValueError(f"component name '{name}' must match {_COMPONENT_NAME.pattern}")
        json.dumps(dict(part.config))

    def fill(tmp: Path) -> None:
        if extra_files is not None:
            extra_files(tmp)
        entries = {}
        for name, part in components.items():
            weights = f"{name}.safetensors"
            save_file({k: v.detach().cpu().contiguous() for k, v in part.state_dict.items()}, str(tmp / weights))
            entries[name] = {"class": part.cls, "config": dict(part.config), "weights": weights,
                             "sha256": _file_sha256(tmp / weights)}
        card = {"format_version": FORMAT_VERSION, "workload": workload, "task": task,
                "transform": dict(transform) if transform is not None else None, "components": entries,
                "preprocessing": dict(preprocessing), "metrics": dict(metrics), "provenance": dict(provenance)}
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, default=float) + "\n")

    return atomic_replace_dir(directory, fill)


def _legacy_card(card: dict[str, Any]) -> ArtifactCard:
    arch = card["architecture"]
    if not isinstance(arch.get("name"), str) or not isinstance(arch.get("config"), dict):
        raise KeyError("architecture.name/config")
    component = Component(LEGACY_COMPONENT, arch["name"], arch["config"], LEGACY_WEIGHTS_FILE, card["weights_sha256"])
    return ArtifactCard({LEGACY_COMPONENT: component}, None, None, None, dict(card.get("preprocessing", {})),
                        dict(card.get("metrics", {})), dict(card.get("provenance", {})), 1)


def _current_card(card: dict[str, Any]) -> ArtifactCard:
    components = {}
    for name, entry in card["components"].items():
        if not _COMPONENT_NAME.match(name) or Path(entry["weights"]).name != entry["weights"]:
            raise ValueError(f"component '{name}' has an invalid name or weights file")
        if not isinstance(entry["class"], str) or not isinstance(entry["config"], dict):
            raise KeyError(f"components.{name}.class/config")
        components[name] = Component(name, entry["class"], entry["config"], entry["weights"], str(entry["sha256"]))
    if not components:
        raise ValueError("no components")
    transform = card.get("transform")
    if transform is not None and not isinstance(transform, dict):
        raise TypeError("transform is not a mapping")
    return ArtifactCard(components, card.get("workload"), card.get("task"), transform,
                        dict(card.get("preprocessing") or {}), dict(card.get("metrics") or {}),
                        dict(card.get("provenance") or {}), FORMAT_VERSION)


def read_card(directory: str | Path) -> ArtifactCard:
    """Read and check ``model.json`` (not the weights).

    Raises:
        ArtifactError: the directory or card is missing, invalid, or of an unknown format_version.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"model artifact not found: {directory} is not a directory")
    if not (directory / CARD_FILE).is_file():
        raise ArtifactError(f"model artifact {directory} is incomplete: {CARD_FILE} is missing")
    try:
        card = json.loads((directory / CARD_FILE).read_text())
        version = card.get("format_version")
        if version not in (1, FORMAT_VERSION):
            raise ArtifactError(f"model artifact {directory}: unsupported format_version {version!r}")
        return _legacy_card(card) if version == 1 else _current_card(card)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"model artifact {directory}: {CARD_FILE} is invalid ({exc})") from None


def read_artifact(directory: str | Path) -> tuple[ArtifactCard, dict[str, dict[str, Any]]]:
    """Read and verify an artifact: its card and each component's state dict (CPU tensors).

    Raises:
        ArtifactError: the directory, the card or a weights file is missing, the card is invalid,
            or a weights file does not match its checksum (naming the component).
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    card = read_card(directory)
    states = {}
    for name, component in card.components.items():
        path = directory / component.weights
        if not path.is_file():
            raise ArtifactError(f"model artifact {directory} is incomplete: {component.weights} "
                                f"(component '{name}') is missing")
        if _file_sha256(path) != component.sha256:
            raise ArtifactError(f"model artifact {directory}: {component.weights} (component '{name}') "
                                "is corrupt (checksum mismatch)")
        try:
            states[name] = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ArtifactError(f"model artifact {directory}: cannot read {component.weights} ({exc})") from None
    return card, states


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
