"""Speed of ``microforge data prepare`` on 512 x 512 16-bit images.

    python benchmarks/prepare_throughput.py [--n N] [--size PX] [--denoise none|median|bilateral|nlm]

1. One core: the per-image work of a prepare task (TIFF decode, percentile normalisation, TIFF
   encode) timed in this process with every library on one thread; the original script took
   23 ms per 512 x 512 16-bit image.
2. Ray Data: the whole prepare job (file reads, writes, meta files, manifest) over N images on a
   local Ray of 2 CPUs, with 1 and 2 workers interleaved after a warm-up run, best of --repeats;
   goal: >= 1.8x with 2.
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

from microforge.datasets.pipeline.prepare import encode_tiff, prepare, prepare_image, prepare_params  # noqa: E402
from microforge.platform.runtime import apply_default_env  # noqa: E402


def cars_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark, noisy 16-bit background with a few percent of bright pixels."""
    image = rng.gamma(2.0, 400.0, (size, size))
    bright = rng.random((size, size)) < 0.03
    image[bright] += rng.uniform(5000, 50000, int(bright.sum()))
    return np.clip(image, 0, 65535).astype(np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="images of the Ray Data runs (default 64)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--denoise", default="none")
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker count, interleaved (default 3)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    sources = [encode_tiff(cars_like(rng, args.size)) for _ in range(min(args.n, 16))]
    params = prepare_params(denoise_method=args.denoise)
    times, cpu_times = [], []
    for i, data in enumerate(sources * 2):
        start, cpu_start = time.perf_counter(), time.thread_time()
        prepare_image({"index": i, "source": f"{i}.tif"}, data, params)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.thread_time() - cpu_start)
    # The first pass warms caches; CPU time is what other processes on a shared machine disturb less.
    wall, cpu = statistics.median(times[len(sources):]), statistics.median(cpu_times[len(sources):])
    print(f"one core, per image ({args.size} px, 16-bit, denoise {args.denoise}): {wall * 1e3:.1f} ms wall, "
          f"{cpu * 1e3:.1f} ms CPU, median (original script: 23 ms)")

    import ray

    apply_default_env()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for i in range(args.n):
            (src / f"{i:04d}.tif").write_bytes(sources[i % len(sources)])
        prepare(src, Path(tmp) / "warm", workers=2, denoise_method=args.denoise)  # starts the worker processes
        # Worker counts interleaved, best of --repeats: this VM's wall clock varies by 2x from
        # run to run for the same CPU time, and the best run is the one least disturbed.
        seconds: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for workers in (1, 2):
                out = Path(tmp) / f"w{workers}-{repeat}"
                seconds[workers].append(prepare(src, out, workers=workers, denoise_method=args.denoise).seconds)
                shutil.rmtree(out)
    ray.shutdown()
    print(f"\n{'workers':>7} {'images':>6} {'best s':>8} {'median s':>8} {'images/s':>9} {'ms/image':>9} "
          f"{'speed-up':>8}")
    best1 = min(seconds[1])
    for workers, runs in seconds.items():
        best = min(runs)
        print(f"{workers:>7} {args.n:>6} {best:>8.2f} {statistics.median(runs):>8.2f} {args.n / best:>9.1f} "
              f"{1e3 * best / args.n:>9.1f} {best1 / best:>7.2f}x")
    print(f"goal: >= 1.8x with 2 workers on 2 cores (best of {args.repeats}; all runs: "
          + "; ".join(f"{w}: " + " ".join(f"{s:.2f}" for s in runs) for w, runs in seconds.items()) + ")")


if __name__ == "__main__":
    main()
