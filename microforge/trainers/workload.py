"""The ``Workload`` spec that every layer reads, and the one registry of workloads.

A workload is everything microforge needs to train, search, probe, export and serve one kind of
model, declared once: its name (the same on the CLI, in the registry, in artifacts and in
Serve), its LightningModule, its options model (pydantic: the ``microforge train <workload>``
flags, Tune-space validation, resume checks), presets, metric and mode, optimisation mode,
report/checkpoint cadence, artifact components, input transform, batch-size probe, and the Serve
task it offers. Shared layers hold no workload-specific branch: they iterate over this registry.

Workloads are found, in this order, in the built-in table below, in the ``microforge.workloads``
entry-point group of installed packages, in ``$MICROFORGE_WORKLOADS`` (comma-separated import
paths, for plugins that are not packaged), and through :func:`register_workload` in-process.
Everything is named by import path, so listing workloads imports neither torch nor Ray.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import TYPE_CHECKING, Any, Literal, Mapping

from microforge.platform.config import ConfigModel, suggest
from microforge.platform.errors import ConfigError
from microforge.platform.imports import import_object
from microforge.platform.transforms import transform_from_spec

if TYPE_CHECKING:
    from .job import TrainingJob

__all__ = ["Cadence", "ENTRY_POINT_GROUP", "RECIPE_JOB_FIELDS", "RunPlan", "SERVE_TASKS", "WORKLOADS_ENV", "Workload",
           "get_workload", "legacy_owner", "register_workload", "workload_names", "workloads"]

ENTRY_POINT_GROUP = "microforge.workloads"
WORKLOADS_ENV = "MICROFORGE_WORKLOADS"
# What a workload's model can do behind the Serve ingress (serve maps each to a deployment).
SERVE_TASKS = ("segment", "detect", "generate", "colorize")
# Keys of a training recipe that are job settings rather than options.
RECIPE_JOB_FIELDS = ("batch_size",)
# The workloads that ship with microforge (one line each; a new one may use an entry point instead).
BUILTIN_WORKLOADS = ("microforge.trainers.unet.workload:DELINEATION",
                     "microforge.trainers.fastgan.workload:FASTGAN",
                     "microforge.trainers.cyclegan.workload:CYCLEGAN",
                     "microforge.trainers.detector.workload:CRYSTALS",
                     "microforge.trainers.diffusion.workload:DDPM",
                     "microforge.trainers.diffusion.dreambooth_workload:DREAMBOOTH")


@dataclass(frozen=True)
class Cadence:
    """How often a run reports metrics and writes a checkpoint: every ``every`` epochs or steps."""

    every: int = 1
    unit: Literal["epochs", "steps"] = "epochs"

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"cadence: every must be an integer >= 1, got {self.every!r}")
        if self.unit not in ("epochs", "steps"):
            raise ConfigError(f"cadence: unit must be 'epochs' or 'steps', got '{self.unit}'")


@dataclass(frozen=True)
class RunPlan:
    """What a workload's ``plan`` function makes of its options: the module's constructor
    arguments, the training data, and (optionally) another metric to rank checkpoints by."""

    module_config: dict[str, Any]
    data: Any
    monitor: str | None = None
    mode: Literal["min", "max"] | None = None


@dataclass(frozen=True)
class Workload:
    """One workload (see the module doc).

    Args:
        name: the one name everywhere; aliases: other names the CLI accepts.
        description: one line for ``--help``.
        module: import path of the LightningModule.
        options: import path of the options model (a :class:`ConfigModel`): module and data
            settings. It must have a ``preset`` field, and the field named ``size_option``.
        plan: import path of ``plan(options) -> RunPlan``.
        presets: model presets, smallest first.
        metric, mode: what ranks checkpoints, stops early and what searches optimise.
        optimization: ``automatic`` (Lightning steps the optimizer; gradient clipping applies) or
            ``manual`` (the module steps its optimizers itself, e.g. GANs).
        cadence: report and checkpoint every N epochs or steps.
        components: names of the artifact's components (what ``export_components`` returns).
        transform: the named input transform spec recorded in artifacts.
        serve_task: the Serve task its artifacts offer (one of :data:`SERVE_TASKS`) or None.
        tune_space: import path of the default search-space mapping (or None).
        probe: import path of ``probe(preset, resolution) -> module`` for the batch-size search;
            None builds the module of the options ``{preset_option: preset, size_option: resolution}``.
        preset_option, size_option: the options fields that hold the model preset and the image side.
        early_stopping_patience, early_stopping_min_delta: default early stopping on ``metric``
            (patience in reports; None: off).
        evaluate: import path of ``register(parser)``, which sets up ``microforge eval <name>``
            (its arguments and ``func``), or None.
        gradient_clip_val: default clipping (automatic optimisation only).
        legacy_names: component class names that format-1 artifacts recorded, mapped to import
            paths (so artifacts written before multi-component artifacts still load and serve).
        recipes: a package holding training recipes as ``<name>.json`` (option values plus job
            settings of :data:`RECIPE_JOB_FIELDS`), or None; recipe_option: the options field that
            names one. Explicitly given options win over the recipe's.

    Raises:
        ConfigError: an inconsistent spec (checked at registration).
    """

    name: str
    description: str
    module: str
    options: str
    plan: str
    presets: tuple[str, ...]
    metric: str
    mode: Literal["min", "max"]
    optimization: Literal["automatic", "manual"] = "automatic"
    cadence: Cadence = field(default_factory=Cadence)
    components: tuple[str, ...] = ("model",)
    transform: Mapping[str, Any] = field(default_factory=lambda: {"name": "unit_range", "params": {}})
    serve_task: str | None = None
    tune_space: str | None = None
    probe: str | None = None
    preset_option: str = "preset"
    size_option: str = "image_size"
    aliases: tuple[str, ...] = ()
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    evaluate: str | None = None
    gradient_clip_val: float | None = 1.0
    legacy_names: Mapping[str, str] = field(default_factory=dict)
    recipes: str | None = None
    recipe_option: str = "preset"

    def __post_init__(self) -> None:
        what = f"workload '{self.name}'"
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum() or self.name != self.name.lower():
            raise ConfigError(f"{what}: a name is lower-case letters, digits, '-' and '_'")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"{what}: mode must be 'min' or 'max', got '{self.mode}'")
        if self.optimization not in ("automatic", "manual"):
            raise ConfigError(f"{what}: optimization must be 'automatic' or 'manual', got '{self.optimization}'")
        if self.optimization == "manual" and self.gradient_clip_val is not None:
            raise ConfigError(f"{what}: gradient clipping is Lightning's automatic optimisation only; "
                              "a manual-optimisation module clips its own gradients (set gradient_clip_val=None)")
        if self.serve_task is not None and self.serve_task not in SERVE_TASKS:
            raise ConfigError(f"{what}: unknown serve task '{self.serve_task}'{suggest(self.serve_task, SERVE_TASKS)}; "
                              f"valid: {', '.join(SERVE_TASKS)}")
        if not self.presets or not self.components:
            raise ConfigError(f"{what}: needs at least one preset and one component")
        transform_from_spec(dict(self.transform))  # an unknown transform fails here

    # -- options ----------------------------------------------------------------------------

    def options_model(self) -> type[ConfigModel]:
        model = import_object(self.options, f"options of workload '{self.name}'")
        if not (isinstance(model, type) and issubclass(model, ConfigModel)):
            raise ConfigError(f"workload '{self.name}': options {self.options} is not a ConfigModel")
        return model

    def load_options(self, values: "ConfigModel | Mapping[str, Any] | None" = None) -> ConfigModel:
        """The options, validated (unknown keys are errors with a did-you-mean); a recipe named in
        ``values`` fills in the options that ``values`` does not give.

        Raises:
            ConfigError: naming the option, or an unknown recipe.
        """
        if values is None or isinstance(values, ConfigModel):
            return self.options_model().load(values if values is not None else {})
        recipe = self.recipe(values.get(self.recipe_option))
        options = {k: v for k, v in recipe.items() if k not in RECIPE_JOB_FIELDS}
        return self.options_model().load({**options, **values})

    def recipe_names(self) -> list[str]:
        if self.recipes is None:
            return []
        return sorted(f.name[:-5] for f in resources.files(self.recipes).iterdir() if f.name.endswith(".json"))

    def recipe(self, name: str | None) -> dict[str, Any]:
        """The recipe ``name`` (``{}`` for None or a workload without recipes).

        Raises:
            ConfigError: an unknown recipe, with a did-you-mean.
        """
        if name is None or self.recipes is None:
            return {}
        names = self.recipe_names()
        if name not in names:
            raise ConfigError(f"workload '{self.name}' has no {self.recipe_option} '{name}'{suggest(name, names)}; "
                              f"valid: {', '.join(names)}")
        recipe = json.loads((resources.files(self.recipes) / f"{name}.json").read_text())
        recipe.pop("description", None)
        return recipe

    def recipe_job_fields(self, options: ConfigModel) -> dict[str, Any]:
        """The job settings (:data:`RECIPE_JOB_FIELDS`) of the recipe the options name."""
        recipe = self.recipe(getattr(options, self.recipe_option, None) if self.recipes else None)
        return {k: v for k, v in recipe.items() if k in RECIPE_JOB_FIELDS}

    def option_names(self) -> list[str]:
        return list(self.options_model().model_fields)

    # -- jobs -------------------------------------------------------------------------------

    def job(self, options: "ConfigModel | Mapping[str, Any] | None" = None, *, epochs: int, runs_dir: Any,
            **job_fields: Any) -> "TrainingJob":
        """The :class:`~microforge.trainers.job.TrainingJob` of these options.

        ``job_fields`` are further TrainingJob fields (``scaling``, ``batch_size``, ``precision``,
        ``name``, ``early_stopping``, ``trainer_options``, ``cadence``...); the workload fills in
        the module, its config, the data, metric, optimisation mode, cadence, clipping and the
        job settings of the recipe the options name (given fields win).

        Raises:
            ConfigError: invalid options or job fields.
        """
        from .job import TrainingJob

        opts = self.load_options(options)
        plan: RunPlan = import_object(self.plan, f"plan of workload '{self.name}'")(opts)
        fields_ = {"gradient_clip_val": self.gradient_clip_val, "seed": int(getattr(opts, "seed", 0) or 0),
                   "cadence": self.cadence, **self.recipe_job_fields(opts), **job_fields}
        return TrainingJob(workload=self.name, options=opts.to_json_dict(), module=self.module,
                           module_config=plan.module_config, data=plan.data, epochs=epochs, runs_dir=runs_dir,
                           monitor=plan.monitor or self.metric, monitor_mode=plan.mode or self.mode,
                           optimization=self.optimization, **fields_)

    def probe_module(self, preset: str, resolution: int) -> Any:
        """The module a batch-size probe trains (it must have ``example_batch(batch_size)``).

        Raises:
            ConfigError: an unknown preset or a resolution the model cannot take.
        """
        if preset not in self.presets:
            raise ConfigError(f"workload '{self.name}' has no preset '{preset}'{suggest(preset, self.presets)}; "
                              f"valid: {', '.join(self.presets)}")
        if self.probe is not None:
            return import_object(self.probe, f"probe of workload '{self.name}'")(preset, resolution)
        job = self.job({self.preset_option: preset, self.size_option: resolution}, epochs=1, runs_dir=".")
        return job.build_module()

    def default_space(self) -> dict[str, Any] | None:
        """The workload's default Tune search space, or None."""
        if self.tune_space is None:
            return None
        return dict(import_object(self.tune_space, f"search space of workload '{self.name}'"))


# --------------------------------------------------------------------------------------------
# Registry

_REGISTERED: dict[str, Workload] = {}
_LOADED: dict[str, Workload] | None = None


def _load_all() -> dict[str, Workload]:
    global _LOADED
    if _LOADED is None:
        found: dict[str, Workload] = {}
        sources = list(BUILTIN_WORKLOADS)
        sources += [ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
        sources += [p.strip() for p in os.environ.get(WORKLOADS_ENV, "").split(",") if p.strip()]
        for path in sources:
            workload = import_object(path, "workload")
            if not isinstance(workload, Workload):
                raise ConfigError(f"workload '{path}' is not a microforge Workload")
            _add(found, workload)
        _LOADED = found
    return {**_LOADED, **_REGISTERED}


def _add(table: dict[str, Workload], workload: Workload) -> None:
    taken = {alias: w for w in table.values() for alias in (w.name, *w.aliases)}
    for name in (workload.name, *workload.aliases):
        if name in taken and taken[name] != workload:
            raise ConfigError(f"workload name '{name}' is taken by workload '{taken[name].name}'")
    table[workload.name] = workload


def register_workload(workload: Workload) -> Workload:
    """Register ``workload`` in this process (registering the same spec again is a no-op).

    Raises:
        ConfigError: its name or an alias is taken by another workload.
    """
    _add({**_load_all()}, workload)  # checks clashes
    _REGISTERED[workload.name] = workload
    return workload


def workloads() -> dict[str, Workload]:
    """Every registered workload, by name, sorted."""
    return dict(sorted(_load_all().items()))


def workload_names(aliases: bool = False) -> list[str]:
    table = workloads()
    return sorted({n for w in table.values() for n in (w.name, *(w.aliases if aliases else ()))})


def legacy_owner(class_name: str) -> tuple[Workload, str] | None:
    """The workload whose ``legacy_names`` has ``class_name`` (a format-1 artifact's class) and the
    import path it maps to, or None."""
    for workload in workloads().values():
        if class_name in workload.legacy_names:
            return workload, workload.legacy_names[class_name]
    return None


def get_workload(name: str) -> Workload:
    """The workload registered as ``name`` (or with ``name`` as an alias).

    Raises:
        ConfigError: an unknown name, with a did-you-mean and the list.
    """
    for workload in workloads().values():
        if name == workload.name or name in workload.aliases:
            return workload
    raise ConfigError(f"unknown workload '{name}'{suggest(name, workload_names(aliases=True))}; "
                      f"valid: {', '.join(workload_names())}")

