"""Finding the models the server runs: the built-in detector, plugin folders and artifacts.

Models load only from the server's models directory (never from the data root, where uploads
go). A model is named by its ``id``: ``builtin:contours``, or a folder relative to the models
directory holding either a microforge artifact (``model.json``) or a plugin (``model.py``).

An artifact is classified by the ``task`` its card records (format-1 cards record none: the
workload that owns the card's class name supplies it) and listed when a Serve task loads that
task (see :mod:`microforge.serve.tasks`). Only ``model.json`` is read: no torch here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microforge.platform.artifact import CARD_FILE, ArtifactCard, ArtifactError, read_card
from microforge.platform.errors import MicroforgeError

from .paths import NotFound, relative_to_root, resolve_inside
from .tasks import BUILTIN_ID, artifact_tasks

log = logging.getLogger(__name__)

BUILTIN_INFO = {"id": BUILTIN_ID, "name": "Contours + minimum-area rectangles", "type": "builtin", "task": "detect",
                "folder": ""}
PLUGIN_FILE = "model.py"
_SCAN_DEPTH = 3


class ModelError(MicroforgeError):
    """A model cannot be found, loaded or run; ``status`` is the HTTP code to answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def card_task(card: ArtifactCard) -> str | None:
    """The Serve task of an artifact: its card's; else its workload's (an artifact exported before
    its workload offered a task, e.g. a DDPM); else (format 1) its class's workload's."""
    if card.task is not None:
        return card.task
    from microforge.trainers.workload import legacy_owner, workloads

    if card.format_version != 1:
        owner = workloads().get(card.workload or "")
        return owner.serve_task if owner is not None else None
    owner = legacy_owner(next(iter(card.components.values())).cls)
    return owner[0].serve_task if owner else None


def describe_folder(models_dir: Path, folder: Path) -> dict[str, Any] | None:
    """``{id, name, type, task, folder, ...}`` for a model folder, or None if it holds no model
    this server runs (an unreadable card, or a task no deployment loads)."""
    rel = relative_to_root(models_dir, folder)
    if (folder / CARD_FILE).is_file():
        try:
            card = read_card(folder)
        except ArtifactError as exc:
            log.debug("skipping %s: %s", folder, exc)
            return None
        task = card_task(card)
        kind = artifact_tasks().get(task or "")
        if kind is None:
            return None
        return {"id": rel, "name": folder.name, "type": kind, "task": task, "folder": rel,
                "workload": card.workload, "components": list(card.components),
                "architecture": next(iter(card.components.values())).cls}
    if (folder / PLUGIN_FILE).is_file():
        return {"id": rel, "name": folder.name, "type": "plugin", "task": "detect", "folder": rel}
    return None


def list_models(models_dir: str | Path) -> list[dict[str, Any]]:
    """The built-in detector, then every artifact and plugin folder (up to 3 levels deep), by id.

    Symlinked folders are followed only while they stay inside ``models_dir``.
    """
    root = Path(models_dir).resolve()
    found = []
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        for child in children:
            real = child.resolve()
            if real != root and root not in real.parents:
                continue
            info = describe_folder(root, real)
            if info is not None:
                found.append(info)
            elif depth + 1 < _SCAN_DEPTH and not (real / CARD_FILE).is_file():
                stack.append((real, depth + 1))
    return [dict(BUILTIN_INFO), *sorted(found, key=lambda m: m["id"])]


def resolve_model_folder(models_dir: str | Path, model_id: str) -> tuple[Path, dict[str, Any]]:
    """The folder of ``model_id`` inside ``models_dir`` and its description.

    Raises:
        PathRejected: the id escapes the models directory.
        NotFound / ModelError: nothing is there, or the folder holds no servable model.
    """
    folder = resolve_inside(models_dir, model_id, what="model folder", must_exist=True)
    if not folder.is_dir():
        raise NotFound(f"model folder '{model_id}' is not a directory")
    info = describe_folder(Path(models_dir).resolve(), folder)
    if info is None:
        raise ModelError(f"model folder '{model_id}' holds neither an artifact ({CARD_FILE}) of a task this "
                         f"server runs ({', '.join(artifact_tasks())}) nor a detector plugin ({PLUGIN_FILE})")
    return folder, info


def describe_model(models_dir: str | Path, model_id: str) -> dict[str, Any]:
    """The listing entry of ``model_id`` (the built-in detector included).

    Raises:
        PathRejected, NotFound, ModelError: see :func:`resolve_model_folder`.
    """
    if model_id == BUILTIN_ID:
        return dict(BUILTIN_INFO)
    return resolve_model_folder(models_dir, model_id)[1]


def resolve_artifact(models_dir: str | Path, model_id: str, task: str) -> Path:
    """The folder of the artifact ``model_id``, which must be of ``task``.

    Raises:
        PathRejected, NotFound, ModelError: see :func:`resolve_model_folder`; another task.
    """
    folder, info = resolve_model_folder(models_dir, model_id)
    if info["task"] != task or info["type"] == "plugin":
        raise ModelError(f"model '{model_id}' is a {info['type']} ({info['task']}) model, not a {task} artifact")
    return folder


def newest_model(models_dir: str | Path, task: str) -> str | None:
    """The id of the most recently written artifact of ``task``, or None."""
    root = Path(models_dir).resolve()
    candidates = [m for m in list_models(root) if m["task"] == task and m["type"] not in ("builtin", "plugin")]
    if not candidates:
        return None
    return max(candidates, key=lambda m: (root / m["folder"] / CARD_FILE).stat().st_mtime)["id"]


def load_served_artifact(models_dir: str | Path, model_id: str, task: str) -> tuple[Any, str]:
    """Load the artifact ``model_id`` of ``task`` (imports torch) and move its components to the
    replica's device: ``(LoadedArtifact, device)``. A replica sees a GPU only when its
    ``ray_actor_options`` reserve one.

    Raises:
        PathRejected, NotFound, ModelError: see :func:`resolve_artifact`; an artifact that does not load.
    """
    import torch

    from microforge.trainers.registry import load_artifact

    folder = resolve_artifact(models_dir, model_id, task)
    try:
        artifact = load_artifact(folder)
    except ArtifactError as exc:
        raise ModelError(str(exc)) from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for module in artifact.components.values():
        module.to(device)
    return artifact, device


@dataclass
class ServedArtifact:
    """A loaded artifact in a replica: the base of the task-specific wrappers."""

    model_id: str
    artifact: Any  # microforge.trainers.registry.LoadedArtifact
    device: str = "cpu"

    def component(self, name: str) -> Any:
        """The component ``name``, or the artifact's only component.

        Raises:
            ModelError: several components and none is called ``name``.
        """
        components = self.artifact.components
        if name in components:
            return components[name]
        if len(components) == 1:
            return next(iter(components.values()))
        raise ModelError(f"model '{self.model_id}' has components {', '.join(components)} and none is called "
                         f"'{name}'")

    def describe(self, module: Any, type_: str, task: str) -> dict[str, Any]:
        """The ``model_info`` every response carries."""
        return {"id": self.model_id, "type": type_, "task": task, "workload": self.artifact.workload,
                "architecture": module.__class__.__name__, "config": getattr(module, "config", {}),
                "metrics": self.artifact.metrics, "device": self.device, "transform": self.artifact.transform.spec()}
