"""CLI group ``train``: one ``train <workload>`` command per registered workload, its flags
generated from the workload's options model (``eval`` lives in :mod:`microforge.evaluate.cli`)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from typing import Any

from ..platform.cli import add_address_argument
from .options_cli import add_option_flags, given_options
from .workload import Workload, get_workload, workloads

log = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = "runs"
DEFAULT_BATCH_SIZE = 8
DEFAULT_EPOCHS = 20
# The train command's own flags (dests); an options field may not reuse one.
JOB_FLAGS = {"epochs", "steps", "every", "workers", "gpus_per_worker", "batch_size", "precision", "patience",
             "min_delta", "name", "resume", "out", "address", "describe", "func", "command", "group", "workload",
             "verbose", "data_workers"}
# Epochs of a run bounded by --steps alone (the steps end it first).
STEPS_EPOCH_CAP = 1_000_000


def default_batch_size(workload: str, preset: str, size: int, precision: str, *, use_gpu: bool = False) -> int:
    """Batch size per worker when ``--batch-size`` is not given.

    The recommendation stored by ``microforge tune batch-size`` for this device, workload,
    preset, image size and precision (its best samples/s), else :data:`DEFAULT_BATCH_SIZE`.
    """
    from ..platform.recommendations import recommended_batch_size

    found = recommended_batch_size(workload, preset, size, precision, use_gpu=use_gpu)
    if found is None:
        return DEFAULT_BATCH_SIZE
    log.info("batch size %d: the recommendation for %s %s at %d px, %s on %s (largest that fits: %d); "
             "--batch-size overrides it", found.best_batch, workload, preset, size, found.precision,
             found.describe_device(), found.max_batch)
    return found.best_batch


def register(groups: argparse._SubParsersAction) -> None:
    train = groups.add_parser("train", help="train models on Ray Train",
                              description="Train a registered workload on Ray Train; prints the run directory "
                                          "and the exported artifact.")
    train_cmds = train.add_subparsers(dest="command", metavar="WORKLOAD", required=True)
    for workload in workloads().values():
        parser = train_cmds.add_parser(workload.name, aliases=list(workload.aliases), help=workload.description,
                                       description=workload.description)
        _add_job_flags(parser, workload)
        names = add_option_flags(parser, workload.options_model(), JOB_FLAGS)
        parser.set_defaults(func=_train, workload=workload.name, option_names=names)


def _add_job_flags(parser: argparse.ArgumentParser, workload: Workload) -> None:
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"total epochs (default {DEFAULT_EPOCHS}; with --resume: the run's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="stop after this many training batches in all (with --resume: the run's)")
    parser.add_argument("--every", type=int, default=None,
                        help=f"report, checkpoint{' and validate' if workload.cadence.unit == 'steps' else ''} every N "
                             f"{workload.cadence.unit} (default {workload.cadence.every})")
    parser.add_argument("--workers", type=int, default=None, help="data-parallel training workers (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per worker (default 0: CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch per worker (default: a recommendation)")
    parser.add_argument("--data-workers", type=int, default=None,
                        help="render tasks at a time per training worker for data made each epoch (default: every "
                             "CPU the training workers leave; benchmarks/feed_rate.py prints the number the step needs)")
    parser.add_argument("--precision", default="auto", help="auto, 32-true, 16-mixed or bf16-mixed")
    parser.add_argument("--patience", type=int, default=workload.early_stopping_patience,
                        help=f"early-stopping patience in reports of {workload.metric} (default "
                             f"{workload.early_stopping_patience or 'off'}; 0: off)")
    parser.add_argument("--min-delta", type=float, default=workload.early_stopping_min_delta,
                        help=f"smallest {workload.metric} change that counts as a gain")
    parser.add_argument("--name", default=None, help=f"run name (default {workload.name}-<time>)")
    parser.add_argument("--resume", metavar="RUN", default=None, help="continue a run (its directory or name)")
    parser.add_argument("--out", default=DEFAULT_RUNS_DIR, help=f"runs directory (default ./{DEFAULT_RUNS_DIR})")
    parser.add_argument("--describe", action="store_true",
                        help=f"print the parameters of each component for every {workload.preset_option} at the "
                             "options given, and exit")
    add_address_argument(parser)


def _resumed_job(args: argparse.Namespace, workload: Workload, given: dict[str, Any]):
    from .job import Scaling
    from .runs import RunError, load_job

    job = load_job(args.resume, args.out)
    if job.workload != workload.name:
        raise RunError(f"run {job.name} trains '{job.workload or job.module}', not '{workload.name}'")
    stored = workload.load_options(job.options)
    conflicts = [f"--{k.replace('_', '-')} {v} (the run has {getattr(stored, k)})"
                 for k, v in given.items() if workload.load_options({**job.options, k: v}) != stored]
    if conflicts:
        raise RunError(f"cannot resume {job.name} with another model or data: {', '.join(conflicts)}")
    if args.workers is not None or args.gpus_per_worker is not None:
        old = job.scaling
        gpus = args.gpus_per_worker if args.gpus_per_worker is not None else (
            old.gpus_per_worker if old.use_gpu else 0.0)
        job = replace(job, scaling=Scaling.from_gpus(args.workers or old.num_workers, gpus))
    if args.epochs is not None:
        job = replace(job, epochs=args.epochs)
    if args.steps is not None:
        job = replace(job, max_steps=args.steps)
    if args.batch_size is not None:
        job = replace(job, batch_size=args.batch_size)
    if args.data_workers is not None:
        job = replace(job, data_workers=args.data_workers)
    return job


def _new_job(args: argparse.Namespace, workload: Workload, given: dict[str, Any]):
    from ..platform.recommendations import recommended_preset
    from .job import EarlyStopping, Scaling

    options = workload.load_options(given)
    gpus = args.gpus_per_worker or 0.0
    # The recipe the options name, given or by default (e.g. dreambooth's "original": batch 1).
    recipe = workload.recipe(getattr(options, workload.recipe_option, None)) if workload.recipes else {}
    batch_size = args.batch_size or recipe.get("batch_size")
    size = int(getattr(options, workload.size_option))
    # The recommended (preset, batch) was measured as a pair: only when neither is given.
    found = None if batch_size or workload.preset_option in {**recipe, **given} else recommended_preset(
        workload.name, size, args.precision, use_gpu=gpus > 0)
    if found is not None:
        options = workload.load_options({**given, workload.preset_option: found.preset})
        batch_size = found.best_batch
        log.info("%s %s, batch size %d: recommended at %d px, %s on %s (%.1f samples/s); --%s and --batch-size "
                 "override it", workload.preset_option, found.preset, found.best_batch, size, found.precision,
                 found.describe_device(), found.samples_per_s, workload.preset_option.replace("_", "-"))
    batch_size = batch_size or default_batch_size(
        workload.name, getattr(options, workload.preset_option), size, args.precision, use_gpu=gpus > 0)
    cadence = replace(workload.cadence, every=args.every) if args.every else workload.cadence
    job = workload.job(options, epochs=args.epochs or (STEPS_EPOCH_CAP if args.steps else DEFAULT_EPOCHS),
                       runs_dir=args.out, name=args.name, scaling=Scaling.from_gpus(args.workers or 1, gpus),
                       batch_size=batch_size, precision=args.precision, max_steps=args.steps, cadence=cadence,
                       data_workers=args.data_workers)
    if args.patience and job.monitor == workload.metric:
        job = replace(job, early_stopping=EarlyStopping(patience=args.patience, min_delta=args.min_delta))
    return job


def _train(args: argparse.Namespace) -> int:
    from .launcher import launch

    workload = get_workload(args.workload)
    given = given_options(args, args.option_names)
    if args.describe:
        from .describe import describe_presets

        print(describe_presets(workload, given))
        return 0
    if args.resume:
        result = launch(_resumed_job(args, workload, given), resume=True, address=args.address)
    else:
        result = launch(_new_job(args, workload, given), address=args.address)
    best = result.metrics
    shown = [k for k in sorted(best) if k.startswith("val_") or k == workload.metric]
    summary = ", ".join(f"{k} {best[k]:.4f}" for k in shown)
    print(f"run: {result.run_dir}")
    print(f"epochs: {result.epochs_completed} in {result.seconds:.1f} s; "
          f"best epoch {best.get('epoch', -1) + 1}: {summary}")
    print(f"artifact: {result.artifact}")
    return 0
