"""Delineation quality: the U-Net trained for a fixed time budget against a classical baseline.

    python benchmarks/unet_quality.py [--minutes 10] [--preset tiny] [--size 64] [--workers 1]
                                      [--gpus-per-worker 0] [--eval-samples 300] [--out DIR]
                                      [--blob-preset robust] [--blob-options JSON] [--ood-size 256]
                                      [--ood-samples 24]

Trains with the launcher (blobs streamed by Ray Data, curriculum, early stopping) for about
``--minutes``: the epoch count is chosen from a short timing of training steps so that the
curriculum and the LR schedule run their full course inside the budget, and Lightning's
``max_time`` stops the run if the estimate was optimistic. Then both methods segment the same
fresh blobs (seed 12345, the full noise range) and the table gives their mean Dice per SNR bin.

Classical baseline: Gaussian blur, Otsu threshold, morphological closing (elliptic kernel). Its
blur sigma (up to a quarter of the image side) and kernel size are tuned on separate blobs
(seed 777) by a grid search, so the U-Net meets the best version of the pipeline rather than an
arbitrary one.

Out-of-recipe table: blobs of :func:`~microforge.datasets.blob_presets.ood_blob_config` of the
training recipe (every widened range just past the training one, 8-bit percentile-normalised),
rendered at ``--ood-size`` (default 256 px, not the training size: ``segment_probabilities``
resizes them to the scale the artifact records), ``--ood-samples`` per noise type. The
baseline is tuned again on separate blobs of that recipe (seed 777) at that size, and the table
gives mean Dice per noise type for both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

SIGMAS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0)  # those up to size/4 are tried
KERNELS = (3, 5, 9, 13, 17, 21, 25, 31)
LAUNCH_SECONDS = 40.0  # Ray Train start-up, artifact export (measured on 2 CPUs)
EPOCH_FIXED_SECONDS = 4.0  # per-epoch Ray Data start and validation, on top of the steps


def classical_masks(images: np.ndarray, sigma: float, kernel: int) -> np.ndarray:
    """Blur + Otsu + closing of ``(N, 1, H, W)`` images in [0, 1] -> ``(N, 1, H, W)`` uint8 masks."""
    import cv2

    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    out = np.empty(images.shape, np.uint8)
    for i, image in enumerate(images[:, 0]):
        blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)
        grey = (np.clip(blurred, 0.0, 1.0) * 255).astype(np.uint8)
        _, mask = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        out[i, 0] = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, element)
    return out


def tune_baseline(size: int, samples: int = 96) -> tuple[float, int, float]:
    """Best ``(sigma, kernel, mean Dice)`` of the classical pipeline on blobs of seed 777."""
    from microforge.datasets.blobs import render_blob_batch
    from microforge.trainers.metrics import dice_score

    batch = render_blob_batch({"size": size}, 777, range(samples))
    sigmas = [s for s in SIGMAS if s <= size / 4]
    scores = {(s, k): dice_score(classical_masks(batch["image"], s, k), batch["mask"]) for s in sigmas for k in KERNELS}
    (sigma, kernel), best = max(scores.items(), key=lambda item: item[1])
    return sigma, kernel, best


def ood_table(artifact_dir: Path, blob: dict, size: int, samples: int) -> list[dict]:
    """Per noise type: mean Dice of the artifact and of the baseline (tuned on seed 777 of the
    same out-of-recipe recipe) on ``samples`` out-of-recipe blobs at ``size`` px."""
    from microforge.datasets.blob_presets import OOD_SEED, ood_blob_config
    from microforge.datasets.blobs import render_blob_batch
    from microforge.datasets.noise import NOISE_TYPES
    from microforge.trainers import load_artifact
    from microforge.trainers.metrics import dice_score
    from microforge.trainers.unet.evaluate import predict_masks

    artifact = load_artifact(artifact_dir)
    recipe = ood_blob_config({**blob, "size": size}).to_json_dict()
    tuning = render_blob_batch(recipe, 777, range(48))
    sigmas = [s for s in SIGMAS if s <= size / 4]
    scores = {(s, k): dice_score(classical_masks(tuning["image"], s, k), tuning["mask"])
              for s in sigmas for k in KERNELS}
    sigma, kernel = max(scores, key=scores.get)
    rows = []
    for noise in NOISE_TYPES:
        config = {**recipe, "noise_types": [noise], "mixed_prob": 1.0 if noise == "mixed" else 0.0}
        batch = render_blob_batch(config, OOD_SEED, range(samples))
        unet = dice_score(predict_masks(artifact, batch["image"]), batch["mask"])
        baseline = dice_score(classical_masks(batch["image"], sigma, kernel), batch["mask"])
        rows.append({"noise": noise, "n": samples, "unet": float(unet), "baseline": float(baseline),
                     "snr_db": float(np.mean(batch["snr_db"])), "sigma": sigma, "kernel": kernel})
    return rows


def seconds_per_step(preset: str, size: int, batch_size: int, gpu: bool) -> float:
    """Median time of a few U-Net training steps in this process (the calibration of the budget)."""
    import torch

    from microforge.trainers.unet import unet_from_preset

    device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)  # as a 1-CPU training worker
    model = unet_from_preset(preset).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch_size, 1, size, size, device=device)
    times = []
    for _ in range(6):
        started = time.perf_counter()
        loss = model(x).float().sigmoid().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train-samples", type=int, default=1024, help="blobs per epoch")
    parser.add_argument("--val-samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3,
                        help="AdamW learning rate; the reference 1e-4 (80 GPU epochs of the standard net) "
                             "barely moves the tiny net within minutes on a CPU")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs chosen from the budget")
    parser.add_argument("--eval-samples", type=int, default=300)
    parser.add_argument("--out", default=None, help="keep the run and the eval report/pictures here")
    parser.add_argument("--address", default=None)
    parser.add_argument("--blob-preset", default="robust", help="training recipe (default robust)")
    parser.add_argument("--blob-options", type=json.loads, default={},
                        help='BlobConfig fields on top of the preset, as JSON (e.g. \'{"pixel_scale_prob": 0.75}\')')
    parser.add_argument("--ood-size", type=int, default=256, help="side of the out-of-recipe blobs")
    parser.add_argument("--ood-samples", type=int, default=24, help="out-of-recipe blobs per noise type")
    args = parser.parse_args()

    from microforge.platform.runtime import ray_runtime
    from microforge.trainers import Scaling, get_workload, launch
    from microforge.trainers.metrics import dice_score
    from microforge.trainers.unet.evaluate import evaluate_unet, summarise_by_snr, write_report

    budget = args.minutes * 60
    step = seconds_per_step(args.preset, args.size, args.batch_size, args.gpus_per_worker > 0)
    steps_per_epoch = args.train_samples // args.workers // args.batch_size
    epoch_seconds = steps_per_epoch * step * 1.15 + EPOCH_FIXED_SECONDS
    epochs = args.epochs or max(2, int((budget - LAUNCH_SECONDS) / epoch_seconds))
    print(f"calibration: {step:.3f} s/step, ~{epoch_seconds:.1f} s/epoch -> {epochs} epochs in {args.minutes:g} min")

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="unet-quality-"))
    job = get_workload("delineation").job(
        {"preset": args.preset, "image_size": args.size, "train_samples": args.train_samples,
         "val_samples": args.val_samples, "lr": args.lr, "blob_preset": args.blob_preset,
         "blob_options": args.blob_options},
        epochs=epochs, runs_dir=out / "runs", batch_size=args.batch_size,
        scaling=Scaling.from_gpus(args.workers, args.gpus_per_worker),
        trainer_options={"max_time": {"seconds": max(60.0, budget - LAUNCH_SECONDS / 2)}})
    with ray_runtime(args.address):
        started = time.perf_counter()
        result = launch(job)
        trained = time.perf_counter() - started
        evaluation = evaluate_unet(result.artifact, samples=args.eval_samples)
    ood = ood_table(result.artifact, job.module_config["blob"], args.ood_size, args.ood_samples)
    paths = write_report(evaluation, out / "eval")
    sigma, kernel, tuned = tune_baseline(args.size)
    baseline = dice_score(classical_masks(evaluation.images, sigma, kernel), evaluation.masks, reduction="none")
    report = evaluation.report
    snr = np.array([s["snr_db"] for s in report["per_sample"]])
    unet = np.array([s["dice"] for s in report["per_sample"]])
    rows = summarise_by_snr(snr, {"unet": unet, "baseline": baseline})

    best = result.metrics
    print(f"\n{args.preset} U-Net, {args.size} px, {result.epochs_completed} epochs in {trained / 60:.1f} min "
          f"({args.workers} worker(s), {'GPU' if args.gpus_per_worker else 'CPU'}, lr {args.lr:g}); best epoch "
          f"{best.get('epoch', -1) + 1}: val_dice {best.get('val_dice', float('nan')):.3f}, "
          f"clean_dice {best.get('val_clean_dice', float('nan')):.3f}")
    print(f"baseline: Gaussian blur sigma {sigma:g} + Otsu + closing {kernel}x{kernel} "
          f"(tuned Dice {tuned:.3f} on 96 other blobs)")
    print(f"evaluation: {args.eval_samples} fresh blobs, seed {report['seed']}, full noise range\n")
    header = f"{'SNR bin (dB)':<14}{'n':>5}{'U-Net':>8}{'baseline':>10}{'diff':>8}  better"
    print(header)
    print("-" * len(header))
    wins = []
    for row in [*rows, {"bin": "all", "n": len(snr), "unet": float(unet.mean()), "baseline": float(baseline.mean())}]:
        if not row["n"]:
            print(f"{row['bin']:<14}{0:>5}{'-':>8}{'-':>10}{'-':>8}")
            continue
        better = row["unet"] > row["baseline"]
        if row["bin"] != "all":
            wins.append(better)
        print(f"{row['bin']:<14}{row['n']:>5}{row['unet']:>8.3f}{row['baseline']:>10.3f}"
              f"{row['unet'] - row['baseline']:>+8.3f}  {'U-Net' if better else 'baseline'}")
    print(f"\nU-Net beats the baseline in {sum(wins)} of {len(wins)} non-empty SNR bins; "
          f"clean Dice {report['overall']['clean_dice']:.3f}")
    print(f"\nout-of-recipe blobs ({args.ood_size} px, {args.ood_samples} per noise type, seed 4242; val_ood_dice "
          f"{best.get('val_ood_dice', float('nan')):.3f}); baseline re-tuned on that recipe: blur sigma "
          f"{ood[0]['sigma']:g} + Otsu + closing {ood[0]['kernel']}x{ood[0]['kernel']}\n")
    header = f"{'noise type':<17}{'n':>4}{'SNR dB':>8}{'U-Net':>8}{'baseline':>10}{'diff':>8}  better"
    print(header)
    print("-" * len(header))
    for row in ood:
        better = "U-Net" if row["unet"] > row["baseline"] else "baseline"
        print(f"{row['noise']:<17}{row['n']:>4}{row['snr_db']:>8.1f}{row['unet']:>8.3f}{row['baseline']:>10.3f}"
              f"{row['unet'] - row['baseline']:>+8.3f}  {better}")
    wins = sum(row["unet"] > row["baseline"] for row in ood)
    print(f"\nout of recipe: U-Net beats the baseline in {wins} of {len(ood)} noise types")
    print(f"run: {result.run_dir}\nreport: {paths['report']}\noverlays: {paths['overlays']}")


if __name__ == "__main__":
    main()
