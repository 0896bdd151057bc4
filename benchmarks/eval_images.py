"""Time ``microforge eval images`` on N + N blob images at 256 px with ``texture`` features.

    python benchmarks/eval_images.py [--n 1000] [--size 256] [--workers W]

Renders two sets of 16-bit TIFFs (blob renderer, two seeds) into a temp directory, runs the
comparison once in this process (``--workers 0``) and once with Ray Data (``--workers W``, default
every CPU), and prints a table: seconds, images/s, and the report's distances.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from microforge.datasets.blobs import render_blob_batch
from microforge.evaluate.compare import compare_image_sets


def _write(directory: Path, seed: int, n: int, size: int) -> None:
    directory.mkdir(parents=True)
    for start in range(0, n, 64):
        batch = render_blob_batch({"size": size}, seed, range(start, min(start + 64, n)))["image"][:, 0]
        for i, image in enumerate(batch, start):
            tifffile.imwrite(directory / f"img_{i:05d}.tif", np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="images per set")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="Ray Data workers (default: every CPU)")
    parser.add_argument("--skip-in-process", action="store_true", help="only time the Ray Data run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        _write(root / "real", 1, args.n, args.size)
        _write(root / "fake", 2, args.n, args.size)
        print(f"rendered {2 * args.n} images of {args.size} px in {time.perf_counter() - t:.1f} s")
        runs = [("ray data", args.workers if args.workers else None)]
        if not args.skip_in_process:
            runs.insert(0, ("in process", 0))
        print(f"{'mode':<12} {'workers':>8} {'seconds':>9} {'images/s':>9} {'ms/image':>9} {'FD':>8} {'KID':>9}")
        for mode, workers in runs:
            if mode == "ray data" and workers is None:
                workers = None if 2 * args.n > 200 else 2  # small sets would run in process otherwise
            t = time.perf_counter()
            report = compare_image_sets(root / "real", root / "fake", root / f"out-{mode.replace(' ', '-')}",
                                        workers=workers)
            seconds = time.perf_counter() - t
            rate = 2 * args.n / seconds
            print(f"{mode:<12} {str(workers if workers is not None else 'all'):>8} {seconds:>9.1f} {rate:>9.2f} "
                  f"{1000 / rate:>9.1f} {report['frechet_distance']:>8.4f} {report['kid_mean']:>9.5f}")


if __name__ == "__main__":
    main()
