"""Hyperparameter search spaces written in YAML, checked against what a workload can tune.

A space file maps hyperparameter names to a constant or to one distribution::

    lr: {loguniform: [1.0e-5, 1.0e-2]}     # log-uniform between the bounds
    warmup_fraction: {uniform: [0.0, 0.1]} # uniform between the bounds
    batch_size: {choice: [4, 8, 16]}       # one of the values, sampled per trial
    preset: {grid: [tiny, small]}          # every value (times --samples)
    image_size: 64                         # a constant

Names must be hyperparameters of the workload (its options and the job-level ``batch_size``,
``precision``, ``gradient_clip_val``: :func:`microforge.tune.trials.hyperparameters`): an unknown
name is an error with a did-you-mean, as is an unknown distribution or a malformed argument.
Parsing does not import Ray; :meth:`SearchSpace.param_space` builds the Ray Tune objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from microforge.platform.config import read_structured_file, suggest
from microforge.platform.errors import ConfigError

__all__ = ["DISTRIBUTIONS", "Distribution", "SearchSpace", "load_search_space"]

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "grid")


@dataclass(frozen=True)
class Distribution:
    """One hyperparameter's values: ``kind`` in :data:`DISTRIBUTIONS` and its arguments.

    ``uniform``/``loguniform`` take ``(low, high)`` with ``low < high`` (``low > 0`` for
    loguniform); ``choice``/``grid`` take a non-empty list of values.
    """

    kind: str
    args: tuple[Any, ...]

    def to_tune(self) -> Any:
        """The Ray Tune sampler (``tune.uniform`` ...) or ``tune.grid_search`` spec."""
        from ray import tune

        if self.kind == "uniform":
            return tune.uniform(*self.args)
        if self.kind == "loguniform":
            return tune.loguniform(*self.args)
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return tune.grid_search(list(self.args))

    def example(self) -> Any:
        """A value of the distribution (the lower bound or the first value): for up-front checks."""
        return self.args[0]

    def describe(self) -> Any:
        return {self.kind: list(self.args)}


@dataclass(frozen=True)
class SearchSpace:
    """Hyperparameters to search (:class:`Distribution`) and to fix (constants)."""

    params: dict[str, Distribution]
    constants: dict[str, Any]

    def param_space(self) -> dict[str, Any]:
        """The ``param_space`` of a Ray Tune ``Tuner``."""
        return {**self.constants, **{name: dist.to_tune() for name, dist in self.params.items()}}

    def example_config(self) -> dict[str, Any]:
        """One configuration of the space (see :meth:`Distribution.example`)."""
        return {**self.constants, **{name: dist.example() for name, dist in self.params.items()}}

    def grid_size(self) -> int:
        """Trials per sample: the product of the grid lengths (1 without a grid)."""
        return math.prod(len(d.args) for d in self.params.values() if d.kind == "grid")

    def describe(self) -> dict[str, Any]:
        """The space as it would be written in YAML (stored with the experiment)."""
        return {**self.constants, **{name: dist.describe() for name, dist in self.params.items()}}


def _bound(name: str, kind: str, value: Any) -> float:
    # PyYAML reads 1e-5 (no dot) as a string: accept numeric strings rather than fail on them.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"search space: '{name}': {kind} bounds must be finite numbers, got {value!r}")
    return float(value)


def _distribution(name: str, spec: Mapping[str, Any]) -> Distribution:
    if len(spec) != 1:
        raise ConfigError(f"search space: '{name}' must be a constant or one distribution "
                          f"({', '.join(DISTRIBUTIONS)}), got keys {', '.join(map(str, spec))}")
    kind, args = next(iter(spec.items()))
    kind = str(kind)
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"search space: '{name}' has an invalid distribution '{kind}'"
                          f"{suggest(kind, DISTRIBUTIONS)}; valid: {', '.join(DISTRIBUTIONS)}")
    if kind in ("uniform", "loguniform"):
        if not isinstance(args, (list, tuple)) or len(args) != 2:
            raise ConfigError(f"search space: '{name}': {kind} takes [low, high], got {args!r}")
        low, high = (_bound(name, kind, v) for v in args)
        if not low < high:
            raise ConfigError(f"search space: '{name}': {kind} needs low < high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"search space: '{name}': loguniform needs low > 0, got {low}")
        return Distribution(kind, (low, high))
    if not isinstance(args, (list, tuple)) or not args:
        raise ConfigError(f"search space: '{name}': {kind} takes a non-empty list of values, got {args!r}")
    return Distribution(kind, tuple(args))


def load_search_space(source: str | Path | Mapping[str, Any], hyperparameters: list[str] | tuple[str, ...]
                      ) -> SearchSpace:
    """Read a search space from a YAML/JSON file or a mapping and check its names.

    Args:
        source: file path or mapping ``{name: constant | {distribution: args}}``.
        hyperparameters: the names the workload accepts.

    Raises:
        ConfigError: unreadable file, a name the workload does not have (with a did-you-mean),
            an invalid distribution or arguments, or a space with nothing to search.
    """
    where = f" ({source})" if not isinstance(source, Mapping) else ""
    data = source if isinstance(source, Mapping) else read_structured_file(source)
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"search space{where}: expected a mapping of hyperparameter names to values or "
                          "distributions")
    params: dict[str, Distribution] = {}
    constants: dict[str, Any] = {}
    for name, spec in data.items():
        name = str(name)
        if name not in hyperparameters:
            raise ConfigError(f"search space{where}: unknown hyperparameter '{name}'{suggest(name, hyperparameters)}; "
                              f"valid: {', '.join(sorted(hyperparameters))}")
        if isinstance(spec, Mapping):
            params[name] = _distribution(name, spec)
        else:
            constants[name] = spec
    if not params:
        raise ConfigError(f"search space{where}: nothing to search; give at least one hyperparameter a "
                          f"distribution ({', '.join(DISTRIBUTIONS)})")
    return SearchSpace(params, constants)
