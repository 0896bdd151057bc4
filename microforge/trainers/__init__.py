"""Trainers: workloads (Lightning modules and their specs) run by one generic Ray Train launcher.

Importing this package is cheap (no torch, Lightning or Ray); workloads live in subpackages
(``microforge.trainers.unet``) and are found through :mod:`microforge.trainers.workload`.
"""

from .data import EpochBatches, EpochContext, SyntheticData, TrainingData, synthetic_dataset
from .job import EarlyStopping, Scaling, TrainingJob, plan_worker_cpus
from .launcher import launch
from .registry import LoadedArtifact, load_artifact, load_model
from .runs import RunError, TrainingResult, find_run, latest_checkpoint, load_job, read_run
from .workload import Cadence, RunPlan, Workload, get_workload, register_workload, workloads

__all__ = [
    "Cadence",
    "EarlyStopping",
    "EpochBatches",
    "EpochContext",
    "LoadedArtifact",
    "RunError",
    "RunPlan",
    "Scaling",
    "SyntheticData",
    "TrainingData",
    "TrainingJob",
    "TrainingResult",
    "Workload",
    "find_run",
    "get_workload",
    "latest_checkpoint",
    "launch",
    "load_artifact",
    "load_job",
    "load_model",
    "plan_worker_cpus",
    "read_run",
    "register_workload",
    "synthetic_dataset",
    "workloads",
]
