"""Name -> class lookups for training modules and models, and the artifact loader.

Entries are ``"package.module:Attribute"`` strings imported on first use, so importing the
registry stays cheap and a Ray worker only imports the workload it trains. A name that itself
contains ``":"`` is taken as such an import path, which lets users (and tests) train their own
LightningModule without registering it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microforge.platform.artifact import ArtifactError, ModelCard, read_artifact
from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "MODELS",
    "TRAINING_MODULES",
    "build_model",
    "load_model",
    "register_model",
    "register_training_module",
    "resolve_model",
    "resolve_training_module",
]

# LightningModule classes the launcher can train, by the name used in a TrainingJob.
TRAINING_MODULES: dict[str, str] = {
    "unet": "microforge.trainers.unet.lightning:UNetModule",
}

# nn.Module classes an artifact can name in ``architecture.name``; rebuilt as ``cls(**config)``.
MODELS: dict[str, str] = {
    "attention_unet": "microforge.trainers.unet.model:AttentionUNet",
}


def _import_target(target: str, what: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} '{target}' is not of the form 'package.module:Attribute'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"{what} '{target}': module '{module_name}' cannot be imported") from None
        raise
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{what} '{target}': '{module_name}' has no attribute '{attr}'") from None


def _resolve(table: dict[str, str], name: str, what: str) -> Any:
    if ":" in name:
        return _import_target(name, what)
    if name not in table:
        raise ConfigError(f"unknown {what} '{name}'{suggest(name, list(table))}; valid: {', '.join(sorted(table))}")
    return _import_target(table[name], what)


def _register(table: dict[str, str], name: str, target: str, what: str) -> None:
    if ":" in name or not name:
        raise ConfigError(f"{what} name '{name}' must be non-empty and contain no ':'")
    if table.get(name, target) != target:
        raise ConfigError(f"{what} '{name}' is already registered as {table[name]}")
    table[name] = target


def register_training_module(name: str, target: str) -> None:
    """Register a LightningModule under ``name`` as ``"package.module:Class"``.

    Workers resolve names in their own process, so register at import time of a module that
    workers import too (or pass the import path itself as the name).

    Raises:
        ConfigError: ``name`` is taken by another target or contains ``":"``.
    """
    _register(TRAINING_MODULES, name, target, "training module")


def register_model(name: str, target: str) -> None:
    """Register an ``nn.Module`` class that artifacts may name (see :func:`register_training_module`)."""
    _register(MODELS, name, target, "model")


def resolve_training_module(name: str) -> type:
    """The LightningModule class registered as ``name`` (or at import path ``name``).

    Raises:
        ConfigError: unknown name (with a did-you-mean) or an import path that does not resolve.
    """
    return _resolve(TRAINING_MODULES, name, "training module")


def resolve_model(name: str) -> type:
    """The ``nn.Module`` class registered as ``name`` (or at import path ``name``).

    Raises:
        ConfigError: as :func:`resolve_training_module`.
    """
    return _resolve(MODELS, name, "model")


def build_model(card: ModelCard, state_dict: dict[str, Any]) -> "nn.Module":
    """Rebuild an artifact's module from its card and weights, in eval mode on the CPU.

    Raises:
        ArtifactError: the card names an unknown class, its config does not fit the class, or
            the weights do not fit the module.
    """
    try:
        cls = resolve_model(card.name)
        model = cls(**card.architecture["config"])
    except (ConfigError, TypeError) as exc:
        raise ArtifactError(f"model artifact: cannot rebuild architecture '{card.name}' ({exc})") from None
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:2]
        raise ArtifactError(f"model artifact: weights do not fit '{card.name}' ({' '.join(first)})") from None
    return model.eval()


def load_model(directory: str | Path) -> "nn.Module":
    """Rebuild the model stored in an artifact directory from that directory alone.

    Raises:
        ArtifactError: see :func:`microforge.platform.artifact.read_artifact` and :func:`build_model`.
    """
    return build_model(*read_artifact(directory))
