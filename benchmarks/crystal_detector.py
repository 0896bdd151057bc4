"""Crystal detector on a CPU budget: train the ``crystals`` workload for N epochs on crystals
rendered each epoch, then score it on held-out renders and time whole-image inference.

Prints (and writes with ``--out``) AP@0.5, AP@0.5:0.95, the median count error and the median
length / width error of matched rods on ``--test-images`` renders of ``--crystal-preset`` at
t in [t0, t1] (seeds disjoint from training), and inference images/s per torch thread at
``--infer-size`` (default 1024 x 768, the ``default`` preset's canvas).

    python benchmarks/crystal_detector.py                        # tiny preset, 3 epochs, 20 test images
    # the issue's 15-minute CPU run:
    python benchmarks/crystal_detector.py --minutes 15 --epochs 16 --train-samples 1024 --test-images 100
    python benchmarks/crystal_detector.py --model runs/x/model   # score an existing artifact, no training

Training runs on an embedded Ray (``--workers`` Ray Train workers, 1 CPU each); scoring and
timing run in this process with ``--threads`` torch threads. On a shared machine, compare rows
of one invocation only (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="score this detector artifact instead of training one")
    p.add_argument("--preset", default="tiny", choices=("tiny", "small", "standard"))
    p.add_argument("--size", type=int, default=256, help="training window (px)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=64, help="training windows per epoch")
    p.add_argument("--val-samples", type=int, default=64,
                   help="validation windows (they also choose the count score: too few make it noisy)")
    p.add_argument("--input-scale", type=float, default=0.5, help="resize factor of the images (recorded)")
    p.add_argument("--windows-per-image", type=int, default=4, help="training windows per rendered image")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="train on GPUs (bf16-mixed)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop training after this long (Lightning max_time); --epochs still sizes the schedule")
    p.add_argument("--crystal-preset", default="default")
    p.add_argument("--t-range", type=float, nargs=2, default=(0.0, 0.5), metavar=("T0", "T1"))
    p.add_argument("--test-images", type=int, default=20)
    p.add_argument("--infer-size", type=int, nargs=2, default=(1024, 768), metavar=("W", "H"))
    p.add_argument("--infer-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--runs", help="keep the training run (checkpoints, artifact) under this directory")
    p.add_argument("--train-options", type=json.loads, default={},
                   help="more `train crystals` options as JSON, e.g. '{\"end_distance_weight\": 2}'")
    return p.parse_args(argv)


def lambda_range(t0: float, t1: float) -> list[float]:
    """The renderer's lambda range for stages t0..t1 (t = (log10(lambda) + 1) / 2)."""
    return [10 ** (2 * t0 - 1), 10 ** (2 * t1 - 1)]


def train(args: argparse.Namespace, runs: Path) -> Path:
    from microforge.trainers.job import Scaling
    from microforge.trainers.launcher import launch
    from microforge.trainers.workload import get_workload

    workload = get_workload("crystals")
    options = {"max_time": {"seconds": args.minutes * 60}} if args.minutes else {}
    job = workload.job({"preset": args.preset, "image_size": args.size, "train_samples": args.train_samples,
                        "input_scale": args.input_scale, "windows_per_image": args.windows_per_image,
                        "val_samples": args.val_samples, "synth": f"crystals:{args.crystal_preset}",
                        "crystal_options": {"stage_lambda_range": lambda_range(*args.t_range)},
                        **args.train_options},
                       epochs=args.epochs, runs_dir=runs, name="bench", batch_size=args.batch_size,
                       early_stopping=None, scaling=Scaling.from_gpus(args.workers, args.gpus_per_worker),
                       trainer_options=options)  # precision auto: bf16-mixed on a GPU
    started = time.perf_counter()
    result = launch(job)
    print(f"trained {result.epochs_completed} of {args.epochs} epoch(s) in {time.perf_counter() - started:.0f} s; "
          f"val_ap50 {result.metrics.get('val_ap50')}")
    return Path(result.artifact)


def held_out(args: argparse.Namespace) -> tuple[list, list]:
    """``(images, ground-truth boxes (G, 5))`` of renders with seeds training never uses."""
    import numpy as np

    from microforge.datasets.crystals import load_preset, render_crystal
    from microforge.datasets.obb import clip_boxes

    config = {**load_preset(args.crystal_preset).to_json_dict(), "stage_lambda_range": lambda_range(*args.t_range)}
    images, gts = [], []
    for i in range(args.test_images):
        sample = render_crystal(config, 10_000_019, i)
        h, w = sample.image.shape[:2]
        boxes = clip_boxes(sample.boxes, w, h)
        images.append(sample.image)
        gts.append(np.array([[b.cx, b.cy, b.length, b.width, b.angle] for b in boxes], np.float64).reshape(-1, 5))
    return images, gts


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import numpy as np
    import torch

    from microforge.evaluate.detector import score_detections
    from microforge.trainers.detector.predict import detect_image, recorded_count_score, recorded_scale
    from microforge.trainers.detector.targets import DecodeSettings
    from microforge.trainers.registry import load_artifact

    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else train(args, Path(args.runs or Path(tmp) / "runs"))
        artifact = load_artifact(model_dir)
        model = artifact["model"].eval()
        images, gts = held_out(args)
        decode = DecodeSettings(score_threshold=0.01)
        scale = recorded_scale(artifact.preprocessing)
        preds = []
        for image in images:
            found = detect_image(model, image, transform=artifact.transform, decode=decode, scale=scale)
            preds.append((found.boxes, found.scores))
        count_score = recorded_count_score(artifact.preprocessing)
        report = score_detections(preds, gts, count_score=count_score).report
        w, h = args.infer_size
        frame = images[0] if images and images[0].shape[:2] == (h, w) else \
            np.random.default_rng(0).integers(0, 255, (h, w), dtype=np.uint8)
        detect_image(model, frame, transform=artifact.transform, scale=scale)  # warm-up
        times = []
        for _ in range(args.infer_repeats):
            started = time.perf_counter()
            detect_image(model, frame, transform=artifact.transform, scale=scale)
            times.append(time.perf_counter() - started)
    result = {"model": str(model_dir) if args.model else "trained here", "preset": args.preset,
              "epochs": None if args.model else args.epochs,
              "device": "GPU" if args.gpus_per_worker else "CPU", "test_images": len(images),
              "t_range": list(args.t_range), "input_scale": scale, "count_score": count_score,
              "ap50": report["ap50"], "ap50_95": report["ap50_95"],
              "count_error": report["count_error"], "length_error": report["length_error"],
              "width_error": report["width_error"], "infer_size": [w, h], "threads": args.threads,
              "images_per_s": 1.0 / statistics.median(times), "load_avg": os.getloadavg()[0]}
    for key, value in result.items():
        print(f"{key:>14}: {value}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
