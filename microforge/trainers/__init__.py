"""Trainers: Lightning modules per workload, run by one generic Ray Train launcher.

Importing this package is cheap (no torch, Lightning or Ray); workloads live in subpackages
(``microforge.trainers.unet``) and are found through :mod:`microforge.trainers.registry`.
"""

from .data import EpochBatches, EpochContext, SyntheticData, TrainingData, synthetic_dataset
from .launcher import (
    EarlyStopping,
    ModelExport,
    RunError,
    Scaling,
    TrainingJob,
    TrainingResult,
    find_run,
    latest_checkpoint,
    launch,
    load_job,
    plan_worker_cpus,
    read_run,
)
from .registry import (
    build_model,
    load_model,
    register_model,
    register_training_module,
    resolve_model,
    resolve_training_module,
)

__all__ = [
    "EarlyStopping",
    "EpochBatches",
    "EpochContext",
    "ModelExport",
    "RunError",
    "Scaling",
    "SyntheticData",
    "TrainingData",
    "TrainingJob",
    "TrainingResult",
    "build_model",
    "find_run",
    "latest_checkpoint",
    "launch",
    "load_job",
    "load_model",
    "plan_worker_cpus",
    "read_run",
    "register_model",
    "register_training_module",
    "resolve_model",
    "resolve_training_module",
    "synthetic_dataset",
]
