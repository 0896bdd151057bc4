"""CLI groups ``train`` and ``eval`` (command ``unet`` each)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..platform.cli import add_address_argument

log = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = "runs"
DEFAULT_BATCH_SIZE = 8
# Arguments that define a U-Net run's model and data: with --resume they must match the run.
_RUN_DEFINING = ("preset", "size", "train_samples", "val_samples", "seed", "lr")


def default_batch_size(trainer: str, preset: str, size: int, precision: str, *, use_gpu: bool = False) -> int:
    """Batch size per worker when ``--batch-size`` is not given.

    The recommendation stored by ``microforge tune batch-size`` for this device, trainer,
    preset, image size and precision (its best samples/s), else :data:`DEFAULT_BATCH_SIZE`.
    """
    from ..platform.recommendations import recommended_batch_size

    found = recommended_batch_size(trainer, preset, size, precision, use_gpu=use_gpu)
    if found is None:
        return DEFAULT_BATCH_SIZE
    log.info("batch size %d: the recommendation for %s %s at %d px, %s on %s (largest that fits: %d); "
             "--batch-size overrides it", found.best_batch, trainer, preset, size, found.precision,
             found.describe_device(), found.max_batch)
    return found.best_batch


def register(groups: argparse._SubParsersAction) -> None:
    train = groups.add_parser("train", help="train models on Ray Train")
    train_cmds = train.add_subparsers(dest="command", metavar="MODEL", required=True)
    unet = train_cmds.add_parser(
        "unet", help="Attention U-Net delineation on blobs synthesised each epoch",
        description="Train the delineation U-Net on blob images rendered by Ray Data every epoch "
                    "under the noise curriculum; prints the run directory and the exported artifact.")
    unet.add_argument("--preset", choices=("tiny", "small", "standard"), default=None,
                      help="network size (default tiny)")
    unet.add_argument("--epochs", type=int, default=None, help="total epochs (default 20; with --resume: the run's)")
    unet.add_argument("--workers", type=int, default=None, help="data-parallel training workers (default 1)")
    unet.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per worker (default 0: CPU)")
    unet.add_argument("--size", type=int, default=None,
                      help="image side in pixels (default: tiny 128, small 256, standard 512)")
    unet.add_argument("--train-samples", type=int, default=None, help="blobs per training epoch (default 256)")
    unet.add_argument("--val-samples", type=int, default=None, help="validation blobs (default 64)")
    unet.add_argument("--batch-size", type=int, default=None, help="batch per worker (default: a recommendation)")
    unet.add_argument("--seed", type=int, default=None, help="data and weight seed (default 0)")
    unet.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 1e-4)")
    unet.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    unet.add_argument("--min-delta", type=float, default=1e-3, help="smallest val_dice gain that counts")
    unet.add_argument("--precision", default="auto", help="auto, 32-true, 16-mixed or bf16-mixed")
    unet.add_argument("--name", default=None, help="run name (default unet-<time>)")
    unet.add_argument("--resume", metavar="RUN", default=None, help="continue a run (its directory or name)")
    unet.add_argument("--out", default=DEFAULT_RUNS_DIR, help=f"runs directory (default ./{DEFAULT_RUNS_DIR})")
    add_address_argument(unet)
    unet.set_defaults(func=_train_unet)

    evaluate = groups.add_parser("eval", help="evaluate trained models")
    eval_cmds = evaluate.add_subparsers(dest="command", metavar="MODEL", required=True)
    eval_unet = eval_cmds.add_parser("unet", help="Dice/IoU/HD95/boundary F1 per SNR bin on fresh blobs")
    eval_unet.add_argument("--model", required=True, help="model artifact directory")
    eval_unet.add_argument("--samples", type=int, default=200, help="blobs to render (default 200)")
    eval_unet.add_argument("--size", type=int, default=None, help="image side (default: the training size)")
    eval_unet.add_argument("--seed", type=int, default=None, help="blob seed (default 12345)")
    eval_unet.add_argument("--batch-size", type=int, default=16)
    eval_unet.add_argument("--out", default=None, help="report directory (default: <artifact>/../eval)")
    add_address_argument(eval_unet)
    eval_unet.set_defaults(func=_eval_unet)


def _train_unet(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .launcher import EarlyStopping, RunError, Scaling, launch, load_job
    from .unet.lightning import UNET_IMAGE_SIZES, unet_job

    if args.resume:
        job = load_job(args.resume, args.out)
        if job.module != "unet":
            raise RunError(f"run {job.name} trains '{job.module}', not a U-Net")
        stored = {"preset": job.module_config.get("preset"), "size": job.module_config.get("image_size"),
                  "train_samples": job.data.train_samples, "val_samples": job.data.val_samples,
                  "seed": job.data.seed, "lr": job.module_config.get("lr", 1e-4)}
        conflicts = [f"--{k.replace('_', '-')} {getattr(args, k)} (the run has {stored[k]})"
                     for k in _RUN_DEFINING if getattr(args, k) is not None and getattr(args, k) != stored[k]]
        if conflicts:
            raise RunError(f"cannot resume {job.name} with another model or data: {', '.join(conflicts)}")
        if args.workers is not None or args.gpus_per_worker is not None:
            old = job.scaling
            gpus = args.gpus_per_worker if args.gpus_per_worker is not None else (
                old.gpus_per_worker if old.use_gpu else 0.0)
            job = replace(job, scaling=Scaling(num_workers=args.workers or old.num_workers, use_gpu=gpus > 0,
                                               gpus_per_worker=gpus or 1.0))
        if args.epochs is not None:
            job = replace(job, epochs=args.epochs)
        if args.batch_size is not None:
            job = replace(job, batch_size=args.batch_size)
        result = launch(job, resume=True, address=args.address)
    else:
        preset = args.preset or "tiny"
        size = args.size or UNET_IMAGE_SIZES[preset]
        job = unet_job(
            epochs=args.epochs or 20,
            runs_dir=args.out,
            preset=preset,
            size=size,
            train_samples=args.train_samples or 256,
            val_samples=args.val_samples if args.val_samples is not None else 64,
            batch_size=args.batch_size or default_batch_size("unet", preset, size, args.precision,
                                                             use_gpu=(args.gpus_per_worker or 0) > 0),
            seed=args.seed or 0,
            workers=args.workers or 1,
            gpus_per_worker=args.gpus_per_worker or 0.0,
            precision=args.precision,
            early_stopping=EarlyStopping(patience=args.patience, min_delta=args.min_delta),
            name=args.name,
            module_options={"lr": args.lr} if args.lr is not None else None,
        )
        result = launch(job, address=args.address)
    best = result.metrics
    summary = ", ".join(f"{k} {best[k]:.4f}" for k in ("val_dice", "val_clean_dice", "val_iou", "val_hd95",
                                                       "val_boundary_f1") if k in best)
    print(f"run: {result.run_dir}")
    print(f"epochs: {result.epochs_completed} in {result.seconds:.1f} s; "
          f"best epoch {best.get('epoch', -1) + 1}: {summary}")
    print(f"artifact: {result.artifact}")
    return 0


def _eval_unet(args: argparse.Namespace) -> int:
    from .unet.evaluate import EVAL_SEED, evaluate_unet, write_report

    result = evaluate_unet(args.model, samples=args.samples, size=args.size,
                           seed=EVAL_SEED if args.seed is None else args.seed,
                           batch_size=args.batch_size, address=args.address)
    out = Path(args.out) if args.out else Path(args.model).absolute().parent / "eval"
    paths = write_report(result, out)
    report = result.report
    print(f"model: {report['model']}  ({report['samples']} blobs, {report['size']} px, seed {report['seed']})")
    header = f"{'SNR bin (dB)':<14}{'n':>6}{'Dice':>8}{'IoU':>8}{'HD95':>8}{'BF1':>8}{'clean':>8}"
    print(header)
    print("-" * len(header))

    def fmt(value: float | None, spec: str = ".3f") -> str:
        return f"{value:{spec}}" if value is not None else "-"

    for row in [*report["snr_bins"], {"bin": "all", "n": report["samples"], **report["overall"]}]:
        print(f"{row['bin']:<14}{row['n']:>6}{fmt(row['dice']):>8}{fmt(row['iou']):>8}"
              f"{fmt(row['hd95'], '.2f'):>8}{fmt(row['boundary_f1']):>8}{fmt(row['clean_dice']):>8}")
    for key in ("report", "plot", "overlays"):
        print(f"{key}: {paths[key]}")
    return 0
