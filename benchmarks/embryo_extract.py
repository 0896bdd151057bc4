"""Extraction time of the ten embryo dataset files with 1 and 2 workers.

    python benchmarks/embryo_extract.py [--videos 8] [--frames 48] [--size 500] [--repeats 2]

Renders the archives once (``synth embryo``, not timed), starts one local Ray with 2 CPUs, then
times ``extract_archives`` (parallel Ray tasks, safe filter, validation, move into place) into a
fresh destination per run. Prints the archive size, seconds per run and the speed-up.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from microforge.datasets.embryo.archives import write_archives
from microforge.datasets.embryo.config import load_preset
from microforge.datasets.embryo.extract import extract_archives
from microforge.platform.runtime import ray_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="embryo-extract-bench-"))
    try:
        with ray_runtime(num_cpus=2):
            config = load_preset("default").model_copy(update={"size": args.size})
            start = time.perf_counter()
            summary = write_archives(config, args.videos, args.frames, work / "archives", workers=2)
            mb = sum(summary.files.values()) / 1e6
            print(f"rendered {args.videos} videos x {args.frames} frames x 7 planes at {args.size} px: "
                  f"{mb:.1f} MB in {time.perf_counter() - start:.1f} s")
            print(f"{'workers':>7} {'runs':>4} {'median s':>9} {'min s':>7} {'MB/s':>7} {'members':>8}")
            times: dict[int, list[float]] = {1: [], 2: []}
            # Interleaved, so that a load that drifts on a shared machine hits both alike.
            for run in range(args.repeats):
                for workers in (1, 2):
                    dest = work / f"out-{workers}-{run}"
                    result = extract_archives(work / "archives", dest, workers=workers)
                    times[workers].append(result.seconds)
                    shutil.rmtree(dest)
            medians = {w: statistics.median(t) for w, t in times.items()}
            for workers in (1, 2):
                print(f"{workers:>7} {len(times[workers]):>4} {medians[workers]:>9.2f} {min(times[workers]):>7.2f} "
                      f"{mb / medians[workers]:>7.1f} {result.members:>8}")
            print(f"speed-up with 2 workers: {medians[1] / medians[2]:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
