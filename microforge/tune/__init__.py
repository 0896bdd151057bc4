"""Ray Tune hyperparameter searches and the hardware batch-size search, generic over trainers.

Importing this package is cheap (no torch or Ray); see :mod:`microforge.tune.hparams`,
:mod:`microforge.tune.batch_search` and :mod:`microforge.platform.recommendations`.
"""

from .batch_search import (
    BatchSearchResult,
    BatchSizeError,
    BatchSizeReport,
    BatchSizeSearch,
    analytic_probe_count,
    linear_scan,
    normalize_precision,
    parse_memory,
    search_batch_size,
)
from .hparams import HparamResult, HparamSearch, TrialSummary, resume_hparam_search, run_hparam_search
from .probe import ProbeResult, measure_training_step
from ..platform.recommendations import Recommendation, find_recommendation, load_recommendations, save_recommendations
from .space import SearchSpace, load_search_space
from .trainers import TunableTrainer, register_tunable_trainer, resolve_tunable_trainer

__all__ = [
    "BatchSearchResult",
    "BatchSizeError",
    "BatchSizeReport",
    "BatchSizeSearch",
    "HparamResult",
    "HparamSearch",
    "ProbeResult",
    "Recommendation",
    "SearchSpace",
    "TrialSummary",
    "TunableTrainer",
    "analytic_probe_count",
    "find_recommendation",
    "linear_scan",
    "load_recommendations",
    "load_search_space",
    "measure_training_step",
    "normalize_precision",
    "parse_memory",
    "register_tunable_trainer",
    "resolve_tunable_trainer",
    "resume_hparam_search",
    "run_hparam_search",
    "save_recommendations",
    "search_batch_size",
]
