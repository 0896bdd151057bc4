"""End-to-end speed of synthetic dataset generation, and where each worker's time goes.

    python benchmarks/generate_throughput.py [--n N] [--renderers crystals cars blobs]
        [--layouts files shards] [--png-level fast] [--repeats R] [--cores 1000]

1. One core, in this process (every library on one thread), per image: the renderer alone, then
   each step of the dataset writer's encode (box clipping, label text, PNG at --png-level and at
   the former level 3), the whole ``encode`` and the writes (files + meta, or a shard). CPU time
   of the thread, median over the images: the figure other processes on a shared machine
   disturb least.
2. Ray Data: the whole ``generate`` job on a local Ray of 2 CPUs, for 1 and 2 workers and each
   layout, after a warm-up job, in --repeats interleaved rounds (medians). Each job runs twice,
   with N and 2N images: ``images/s`` is the steady rate (N / the difference of the two times),
   ``fixed s`` what a job costs whatever its size (actor start-up, the manifest), and
   ``overhead ms`` the wall time per image per worker that is neither encode nor write inside
   the workers (Ray Data, the driver, the OS); ``in stages`` and ``CPU busy`` tell idle gaps
   between tasks from CPU contention (the explanation of a speed-up under the goal).
   Goals: 1 worker >= 80 % of the encode-only rate; 2 workers >= 1.7x of 1 on 2 cores.
3. Scale-out projection: the measured 2-worker rate per core times --cores, and the output
   bandwidth that implies (the written bytes per image measured in step 2).

The blob renderer has no dataset kind in microforge; this script defines a minimal one (image and
mask as PNG) so that its rates are comparable.
"""

from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)

from microforge.datasets import blobs, labels  # noqa: E402
from microforge.datasets.cars.config import load_preset as cars_preset  # noqa: E402
from microforge.datasets.cars.dataset import CARS  # noqa: E402
from microforge.datasets.cars.render import render_cars  # noqa: E402
from microforge.datasets.crystals import load_preset as crystal_preset  # noqa: E402
from microforge.datasets.crystals import render_crystal  # noqa: E402
from microforge.datasets.crystals.dataset import CLASS_IDS, CRYSTALS  # noqa: E402
from microforge.datasets.images import encode_image  # noqa: E402
from microforge.datasets.obb import clip_boxes  # noqa: E402
from microforge.datasets.shards import ShardBuilder  # noqa: E402
from microforge.datasets.writer import (DatasetKind, EncodedSample, GenerationOptions, commit_sample,  # noqa: E402
                                        generate, sample_stem)
from microforge.platform.runtime import apply_default_env  # noqa: E402


def encode_blob(config, seed: int, index: int, options: GenerationOptions) -> EncodedSample:
    sample = blobs.render_blob(config, seed, index)
    stem = sample_stem(index)
    image = np.round(sample.image * 255).astype(np.uint8)
    files = {f"images/{stem}.png": encode_image(image, ".png", png_level=options.png_level),
             f"masks/{stem}.png": encode_image(sample.mask * 255, ".png", png_level=options.png_level)}
    return EncodedSample(files, {"image": f"images/{stem}.png", "mask": f"masks/{stem}.png"})


BLOBS = DatasetKind("blobs", blobs.BlobConfig, blobs.RENDERER_VERSION, encode_blob, ("images", "masks"))
KINDS = {"crystals": (CRYSTALS, lambda: crystal_preset("default"), {"min_visible_fraction": 0.25}),
         "cars": (CARS, lambda: cars_preset("default"), {}),
         "blobs": (BLOBS, lambda: blobs.BlobConfig(), {})}


def cpu_ms(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.thread_time()
    result = fn(*args, **kwargs)
    return (time.thread_time() - start) * 1e3, result


def one_core(name: str, images: int, png_level) -> dict[str, float]:
    """Median CPU ms per image of each step, in this process."""
    kind, make_config, extra = KINDS[name]
    config = make_config()
    options = GenerationOptions("png", extra=extra, png_level=png_level)
    steps: dict[str, list[float]] = {}

    def add(step: str, ms: float) -> None:
        steps.setdefault(step, []).append(ms)

    kind.encode(config, 0, 10**6, options)  # warm-up: kernels, fonts, caches
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(images):
            if name == "crystals":
                ms, sample = cpu_ms(render_crystal, config, 0, index)
                add("render", ms)
                h, w = sample.image.shape[:2]
                ms, boxes = cpu_ms(clip_boxes, sample.boxes, w, h, 0.25)
                add("clip boxes", ms)
                ms, _ = cpu_ms(lambda: (labels.format_dota(boxes, "x.png"),
                                        labels.format_yolo_obb(boxes, w, h, CLASS_IDS),
                                        labels.format_ultralytics_obb(boxes, w, h, CLASS_IDS)))
                add("label text", ms)
                pictures = [sample.image]
            elif name == "cars":
                ms, sample = cpu_ms(render_cars, config, 0, index)
                add("render", ms)
                pictures = [sample.image, sample.mask]
            else:
                ms, sample = cpu_ms(blobs.render_blob, config, 0, index)
                add("render", ms)
                pictures = [np.round(sample.image * 255).astype(np.uint8), sample.mask * 255]
            add(f"PNG {png_level}", sum(cpu_ms(encode_image, p, ".png", png_level=png_level)[0] for p in pictures))
            add("PNG 3", sum(cpu_ms(encode_image, p, ".png", png_level=3)[0] for p in pictures))
            ms, encoded = cpu_ms(kind.encode, config, 0, index, options)
            add("encode", ms)
            add("write files", cpu_ms(commit_sample, Path(tmp), index, "x", encoded.columns, encoded.files)[0])
            add("add to shard", cpu_ms(ShardBuilder().add, sample_stem(index), encoded.files, b"{}")[0])
    return {step: statistics.median(values) for step, values in steps.items()}


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            ticks = [float(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan"), float("nan")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def steady_rate(kind, config, n: int, options, workers: int, out: Path) -> dict:
    """One measurement: jobs of n and 2n images; the steady rate from the difference. Also from
    the difference: the share of the workers' wall time spent in the writer's stages, and the
    share of the machine's CPU time that was busy (any process: workers, Ray, the driver)."""
    times, stages, cpu, summary = [], [], [], None
    for size in (n, 2 * n):
        before = machine_cpu()
        summary = generate(kind, config, size, out / f"{workers}-{size}", options=options, workers=workers)
        after = machine_cpu()
        times.append(summary.seconds)
        stages.append(sum(summary.stage_seconds.values()))
        cpu.append((after[0] - before[0], after[1] - before[1]))
    rate = n / max(times[1] - times[0], 1e-9)
    inside = sum(summary.stage_seconds.values()) / summary.n * 1e3
    return {"rate": rate, "fixed": times[0] - n / rate,
            "in_stages": (stages[1] - stages[0]) / workers / max(times[1] - times[0], 1e-9),
            "busy": (cpu[1][0] - cpu[0][0]) / max(cpu[1][1] - cpu[0][1], 1e-9),
            "encode": summary.stage_seconds.get("encode", 0) / summary.n * 1e3,
            "write": (summary.stage_seconds.get("write", 0) + summary.stage_seconds.get("verify", 0)) / summary.n * 1e3,
            "overhead": workers * 1e3 / rate - inside, "bytes": tree_size(out / f"{workers}-{2 * n}") / summary.n}


def ray_rates(name: str, n: int, layouts: list[str], png_level, tmp: Path, repeats: int) -> list[dict]:
    """Per layout, 1 and 2 workers measured in turn ``repeats`` times (so a slow spell of the
    machine hits both); every figure is the median over the rounds, the speed-up the median of
    each round's 2-worker / 1-worker rate."""
    kind, make_config, extra = KINDS[name]
    config = make_config()
    rows = []
    for layout in layouts:
        options = GenerationOptions("png", extra=extra, png_level=png_level, layout=layout,
                                    shard_size=max(1, n // 8))
        rounds = []
        for r in range(repeats):
            out = tmp / f"{name}-{layout}-{r}"
            rounds.append({workers: steady_rate(kind, config, n, options, workers, out) for workers in (1, 2)})
            shutil.rmtree(out, ignore_errors=True)
        for workers in (1, 2):
            row = {key: statistics.median(m[workers][key] for m in rounds) for key in rounds[0][workers]}
            row.update(renderer=name, layout=layout, workers=workers,
                       speedup=statistics.median(m[workers]["rate"] / m[1]["rate"] for m in rounds),
                       speedups=[m[workers]["rate"] / m[1]["rate"] for m in rounds])
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=24, help="images of the smaller Ray Data job (default 24)")
    parser.add_argument("--single", type=int, default=8, help="images timed in this process (default 8)")
    parser.add_argument("--renderers", nargs="+", default=["crystals", "cars", "blobs"], choices=sorted(KINDS))
    parser.add_argument("--layouts", nargs="+", default=["files", "shards"], choices=("files", "shards"))
    parser.add_argument("--png-level", default="fast")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of 1- and 2-worker jobs (medians)")
    parser.add_argument("--cores", type=int, default=1000, help="cluster size of the projection (default 1000)")
    parser.add_argument("--skip-ray", action="store_true", help="only the one-core breakdown")
    args = parser.parse_args()
    level = int(args.png_level) if args.png_level.isdigit() else args.png_level

    print(f"1. one core, CPU ms per image (median of {args.single}), PNG {level} unless named")
    encode_rate = {}
    for name in args.renderers:
        steps = one_core(name, args.single, level)
        encode_rate[name] = 1e3 / steps["encode"]
        print(f"  {name:<9} " + "  ".join(f"{step} {ms:.1f}" for step, ms in steps.items())
              + f"  -> encode-only {encode_rate[name]:.1f} images/s")
    if args.skip_ray:
        return

    import ray

    apply_default_env()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = []
    with tempfile.TemporaryDirectory(prefix="generate-bench-") as tmp:
        for name in args.renderers:
            generate(KINDS[name][0], KINDS[name][1](), 4, Path(tmp) / f"warm-{name}",
                     options=GenerationOptions("png", extra=KINDS[name][2]), workers=2)  # worker processes, kernels
            rows += ray_rates(name, args.n, args.layouts, level, Path(tmp), args.repeats)
    ray.shutdown()

    print(f"\n2. Ray Data, local Ray of 2 CPUs, jobs of {args.n} and {2 * args.n} images, "
          f"medians of {args.repeats} round(s)")
    print(f"{'renderer':<9} {'layout':<7} {'workers':>7} {'images/s':>9} {'speed-up':>8} {'vs encode':>9} "
          f"{'encode ms':>9} {'write ms':>8} {'overhead ms':>11} {'in stages':>9} {'CPU busy':>8} {'fixed s':>7} "
          f"{'KiB/image':>9}")
    for r in rows:
        share = r["rate"] / r["workers"] / encode_rate[r["renderer"]]
        print(f"{r['renderer']:<9} {r['layout']:<7} {r['workers']:>7} {r['rate']:>9.2f} {r['speedup']:>7.2f}x "
              f"{share:>8.0%} {r['encode']:>9.1f} {r['write']:>8.1f} {r['overhead']:>11.1f} {r['in_stages']:>9.0%} "
              f"{r['busy']:>8.0%} {r['fixed']:>7.1f} "
              f"{r['bytes'] / 1024:>9.0f}" + (f"  (rounds {', '.join(f'{x:.2f}' for x in r['speedups'])})"
                                               if r["workers"] == 2 and len(r["speedups"]) > 1 else ""))
    print("vs encode: images/s per worker / the one-core encode-only rate (goal >= 80 % with 1 worker); "
          "speed-up goal >= 1.7x with 2")
    print("in stages: share of each worker's wall time inside encode and write; CPU busy: share of the "
          "machine's CPU time used by any process (both over the extra images of the larger job). With 2 "
          "workers, busy well under 100 % means idle gaps between tasks; encode ms above the 1-worker "
          "figure means the two workers slow each other (shared caches, memory bandwidth, the VM's cores)")

    print(f"\n3. projection to {args.cores} cores (2-worker rate per core)")
    for r in rows:
        if r["workers"] == 2:
            per_core = r["rate"] / 2
            total = per_core * args.cores
            print(f"  {r['renderer']:<9} {r['layout']:<7} {per_core:6.2f} images/s/core -> {total:8.0f} images/s, "
                  f"{total * r['bytes'] / 1e9:5.2f} GB/s of output, 10 M images in {1e7 / total / 3600:.2f} h "
                  f"({1e7 / per_core / 3600:.0f} core-hours)")


if __name__ == "__main__":
    main()
