"""What the searches need to know about a trainer, by trainer name.

A :class:`TunableTrainer` tells the hyperparameter search how to turn a configuration into a
:class:`~microforge.trainers.launcher.TrainingJob` and which metric to optimise, and tells the
batch-size search how to build the module it probes. Entries are import paths resolved on first
use (like :mod:`microforge.trainers.registry`), so naming a trainer costs nothing until it runs;
another trainer plugs in with :func:`register_tunable_trainer` and needs nothing else here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

if TYPE_CHECKING:
    from microforge.trainers.launcher import TrainingJob

__all__ = [
    "JOB_HYPERPARAMETERS",
    "TUNABLE_TRAINERS",
    "TunableTrainer",
    "register_tunable_trainer",
    "resolve_tunable_trainer",
]

# TrainingJob fields any search space may set, whatever the trainer.
JOB_HYPERPARAMETERS = ("batch_size", "precision", "gradient_clip_val")


@dataclass(frozen=True)
class TunableTrainer:
    """A trainer as the searches see it.

    Args:
        name: the name on the command line (``--trainer``).
        module: training-module registry name (see
            :func:`~microforge.trainers.registry.resolve_training_module`); the arguments of its
            constructor are hyperparameters.
        make_job: import path of ``make_job(params, *, epochs, runs_dir, name) -> TrainingJob``,
            where ``params`` holds the constructor arguments and ``data_parameters`` of one
            configuration (``JOB_HYPERPARAMETERS`` and the scaling are applied by the search).
        make_probe_module: import path of ``make_probe_module(preset, resolution)`` returning
            the LightningModule to probe; it must have ``example_batch(batch_size)``.
        presets: model presets (``--presets``), smallest first.
        metric, mode: what the hyperparameter search optimises.
        data_parameters: further hyperparameters ``make_job`` accepts (data sizes, seeds...).
        size_argument: the constructor argument that holds the input resolution.
        excluded: constructor arguments that are not hyperparameters.
    """

    name: str
    module: str
    make_job: str
    make_probe_module: str
    presets: tuple[str, ...]
    metric: str
    mode: Literal["min", "max"]
    data_parameters: tuple[str, ...] = ()
    size_argument: str = "image_size"
    excluded: tuple[str, ...] = field(default_factory=tuple)

    def module_parameters(self) -> list[str]:
        """Constructor arguments of the training module (imports it); a constructor that passes
        ``**kwargs`` on contributes its base classes' arguments too."""
        from microforge.trainers.registry import resolve_training_module

        names: list[str] = []
        for cls in resolve_training_module(self.module).__mro__:
            if "__init__" not in vars(cls):
                continue
            params = inspect.signature(vars(cls)["__init__"]).parameters.values()
            names += [p.name for p in params if p.name != "self" and p.name not in names
                      and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in self.excluded]
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                break
        return names

    def hyperparameters(self) -> list[str]:
        """Every name a search space may use for this trainer."""
        return [*self.module_parameters(), *self.data_parameters, *JOB_HYPERPARAMETERS]

    def job_factory(self) -> Callable[..., "TrainingJob"]:
        from microforge.trainers.data import import_callable

        return import_callable(self.make_job)

    def probe_module(self, preset: str, resolution: int) -> Any:
        """The module a batch-size probe trains (raises the module's ConfigError for bad input)."""
        from microforge.trainers.data import import_callable

        if preset not in self.presets:
            raise ConfigError(f"trainer '{self.name}' has no preset '{preset}'{suggest(preset, self.presets)}; "
                              f"valid: {', '.join(self.presets)}")
        return import_callable(self.make_probe_module)(preset, resolution)


TUNABLE_TRAINERS: dict[str, TunableTrainer] = {
    "unet": TunableTrainer(
        name="unet",
        module="unet",
        make_job="microforge.tune.unet:unet_tuning_job",
        make_probe_module="microforge.tune.unet:unet_probe_module",
        presets=("tiny", "small", "standard"),
        metric="val_dice",
        mode="max",
        data_parameters=("train_samples", "val_samples", "seed"),
    ),
}


def register_tunable_trainer(trainer: TunableTrainer) -> None:
    """Make ``trainer`` searchable under ``trainer.name``.

    Raises:
        ConfigError: the name is taken by a different trainer.
    """
    if TUNABLE_TRAINERS.get(trainer.name, trainer) != trainer:
        raise ConfigError(f"tunable trainer '{trainer.name}' is already registered")
    TUNABLE_TRAINERS[trainer.name] = trainer


def resolve_tunable_trainer(name: str) -> TunableTrainer:
    """The trainer registered as ``name``.

    Raises:
        ConfigError: unknown name, with a did-you-mean and the valid names.
    """
    if name not in TUNABLE_TRAINERS:
        raise ConfigError(f"unknown trainer '{name}'{suggest(name, list(TUNABLE_TRAINERS))}; "
                          f"valid: {', '.join(sorted(TUNABLE_TRAINERS))}")
    return TUNABLE_TRAINERS[name]
