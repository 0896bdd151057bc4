"""Single-core speed of the crystal renderer on its shipped presets.

    python benchmarks/render_crystals.py [--n N] [--preset NAME ...]

Pins every library to one thread, renders one warm-up image per preset (numba kernels load
from their cache or compile then; the compile time is printed separately), then times N images
per preset. Targets: <= 0.05 s/image for ``default``, <= 0.16 s/image for ``standard``.
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

from microforge.datasets.crystals import load_preset, render_crystal  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10, help="timed images per preset (default 10)")
    parser.add_argument("--preset", nargs="+", default=["default", "standard"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    render_crystal(load_preset("default").model_copy(update={"width": 32, "height": 32}), 0, 0)
    print(f"first render (kernel compile or cache load): {time.perf_counter() - start:.2f} s")

    # Wall time, and the thread's CPU time, which other processes on a shared machine disturb less.
    print(f"{'preset':<10} {'size':>11} {'images':>6} {'s/image':>8} {'median':>8} {'cpu s/image':>11} "
          f"{'images/s/core':>13}")
    for name in args.preset:
        config = load_preset(name)
        render_crystal(config, args.seed, 10**6)  # warm-up: fonts, caches
        wall, cpu = [], []
        for index in range(args.n):
            start, start_cpu = time.perf_counter(), time.thread_time()
            render_crystal(config, args.seed, index)
            wall.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
        mean = statistics.fmean(wall)
        print(f"{name:<10} {config.width:>5}x{config.height:<5} {args.n:>6} {mean:>8.4f} "
              f"{statistics.median(wall):>8.4f} {statistics.fmean(cpu):>11.4f} {1 / mean:>13.1f}")


if __name__ == "__main__":
    main()
