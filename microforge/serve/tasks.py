"""The Serve task table: what the server can do with a model, and which deployment and routes do it.

Each :class:`ServeTask` names its deployment (a class in :mod:`microforge.serve.deployments`,
also its key under ``deployments:`` in the serve config), its route modules (under
:mod:`microforge.serve.routes`), and which models it takes: the ``task`` recorded in an
artifact's card (for format-1 artifacts, the ``serve_task`` of the workload that owns the
class), plus ``detect`` for the built-in detector and plugins. The application builder, the
ingress, the backend, the config, model listing, selection and ``/health`` iterate over
:data:`TASKS`; adding a task is one row here, one deployment and one route module.

``render`` (crystal previews) is a Serve-only task: it takes no model.

Importing this module imports neither Ray nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUILTIN_ID", "DEPLOYMENT_NAMES", "INGRESS", "TASKS", "ServeTask", "artifact_tasks", "get_task",
           "initial_selection", "tasks_taking"]

INGRESS = "Ingress"
BUILTIN_ID = "builtin:contours"  # the built-in contour detector (no folder)


@dataclass(frozen=True)
class ServeTask:
    """One row of the task table.

    Args:
        name: the task (a workload ``serve_task`` where it serves artifacts).
        deployment: class name in :mod:`microforge.serve.deployments` and config key.
        routers: modules under :mod:`microforge.serve.routes` whose ``router`` the ingress mounts.
        accepts: model tasks the deployment loads (``detect`` covers the built-in detector and
            plugins); empty for a deployment that takes no model.
        artifact_type: the ``type`` that model listings give artifacts of this task.
        role: the model-selection role in the state actor (None: no selection).
        loaded_key: the key of ``/health``'s ``models`` listing what the replicas loaded.
        batched: the deployment batches with ``serve.batch`` (``max_batch_size`` and
            ``batch_wait_timeout_s`` of its config apply).
        default_model: the model selected for ``role`` when the state actor starts.
    """

    name: str
    deployment: str
    routers: tuple[str, ...]
    accepts: tuple[str, ...] = ()
    artifact_type: str | None = None
    role: str | None = None
    loaded_key: str | None = None
    batched: bool = False
    default_model: str | None = None


TASKS: tuple[ServeTask, ...] = (
    ServeTask("segment", "SegmentationModel", ("delineation",), accepts=("segment",), artifact_type="segmentation",
              role="segmentation", loaded_key="segmentation_loaded", batched=True),
    ServeTask("detect", "Detector", ("detection", "timelapse", "live"), accepts=("detect", "segment"),
              artifact_type="detector", role="detector", loaded_key="detectors_loaded", default_model=BUILTIN_ID),
    ServeTask("generate", "GeneratorModel", ("generation",), accepts=("generate",), artifact_type="generator",
              role="generator", loaded_key="generators_loaded", batched=True),
    ServeTask("colorize", "ColorizerModel", ("colorization",), accepts=("colorize",), artifact_type="colorizer",
              role="colorizer", loaded_key="colorizers_loaded", batched=True),
    ServeTask("render", "CrystalRenderer", ("synthesis",)),
)

DEPLOYMENT_NAMES: tuple[str, ...] = (INGRESS, *(task.deployment for task in TASKS))


def get_task(name: str) -> ServeTask:
    """The task called ``name``.

    Raises:
        KeyError: no such task.
    """
    for task in TASKS:
        if task.name == name:
            return task
    raise KeyError(f"unknown serve task '{name}'")


def artifact_tasks() -> dict[str, str]:
    """Artifact tasks the server loads, mapped to the ``type`` listings give them."""
    return {task.name: task.artifact_type for task in TASKS if task.artifact_type}


def tasks_taking(model_task: str) -> list[ServeTask]:
    """The tasks whose deployment loads models of ``model_task``."""
    return [task for task in TASKS if model_task in task.accepts]


def initial_selection(defaults: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """The model selection the state actor starts with: per role, the model ``defaults`` (by
    task) names, else the task's own default model."""
    defaults = defaults or {}
    return {task.role: defaults.get(task.name) or task.default_model for task in TASKS if task.role}
