"""Ray Tune hyperparameter searches and the hardware batch-size search, generic over workloads.

Both take a workload (:mod:`microforge.trainers.workload`) by name or as the object itself.
Importing this package is cheap (no torch or Ray); see :mod:`microforge.tune.hparams`,
:mod:`microforge.tune.batch_search` and :mod:`microforge.platform.recommendations`.
"""

from ..platform.recommendations import Recommendation, find_recommendation, load_recommendations, save_recommendations
from .batch_search import BatchSizeReport, BatchSizeSearch, parse_memory, recommendations_from_report
from .bisection import BatchSearchResult, BatchSizeError, analytic_probe_count, linear_scan, search_batch_size
from .hparams import HparamResult, HparamSearch, resume_hparam_search, run_hparam_search
from .probe import ProbeResult, measure_training_step
from .probe_actor import ProbeSettings, probe_in_fresh_actor
from .results import TrialSummary
from .space import SearchSpace, load_search_space
from .trials import JOB_HYPERPARAMETERS, build_trial_job, hyperparameters

__all__ = [
    "BatchSearchResult",
    "BatchSizeError",
    "BatchSizeReport",
    "BatchSizeSearch",
    "HparamResult",
    "HparamSearch",
    "JOB_HYPERPARAMETERS",
    "ProbeResult",
    "ProbeSettings",
    "Recommendation",
    "SearchSpace",
    "TrialSummary",
    "analytic_probe_count",
    "build_trial_job",
    "find_recommendation",
    "hyperparameters",
    "linear_scan",
    "load_recommendations",
    "load_search_space",
    "measure_training_step",
    "parse_memory",
    "probe_in_fresh_actor",
    "recommendations_from_report",
    "resume_hparam_search",
    "run_hparam_search",
    "save_recommendations",
    "search_batch_size",
]
