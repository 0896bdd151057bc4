"""Single-core speed of the CARS tissue renderer on its shipped presets.

    python benchmarks/render_cars.py [--n N] [--size PX] [--preset NAME ...]

Pins every library to one thread, renders one warm-up image (numba kernels load from their
cache or compile then; that time is printed separately), then times N images per preset.
Target: >= 20 images/s per core at 512 px.
"""

from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import statistics  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402

cv2.setNumThreads(1)

from microforge.datasets.cars import load_preset, preset_names, render_cars  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="timed images per preset (default 40)")
    parser.add_argument("--size", type=int, default=512, help="image side in px (default 512)")
    parser.add_argument("--preset", nargs="+", default=preset_names())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    render_cars(load_preset("default").model_copy(update={"size": 32}), 0, 0)
    print(f"first render (kernel compile or cache load): {time.perf_counter() - start:.2f} s")

    # Wall time, and the thread's CPU time, which other processes on a shared machine disturb less.
    print(f"{'preset':<11} {'size':>5} {'images':>6} {'s/image':>8} {'median':>8} {'cpu s/image':>11} "
          f"{'images/s/core':>13} {'follicles':>9} {'bright %':>8}")
    for name in args.preset:
        config = load_preset(name).model_copy(update={"size": args.size})
        render_cars(config, args.seed, 10**6)  # warm-up
        wall, cpu, follicles, bright = [], [], [], []
        for index in range(args.n):
            start, start_cpu = time.perf_counter(), time.thread_time()
            sample = render_cars(config, args.seed, index)
            wall.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
            follicles.append(sample.meta["n_follicles"])
            bright.append(sample.meta["bright_fraction"])
        mean_cpu = statistics.fmean(cpu)
        print(f"{name:<11} {args.size:>5} {args.n:>6} {statistics.fmean(wall):>8.4f} "
              f"{statistics.median(wall):>8.4f} {mean_cpu:>11.4f} {1 / mean_cpu:>13.1f} "
              f"{statistics.fmean(follicles):>9.1f} {100 * statistics.fmean(bright):>8.2f}")


if __name__ == "__main__":
    main()
