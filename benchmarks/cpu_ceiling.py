"""The speed-up two plain processes get on this machine: the ceiling for any 2-worker job.

Runs the same single-threaded work (a 3x3 convolution in torch, and a uint16 percentile stretch in
numpy, the kinds of work generation and ``prepare`` do) in 1 process, then in 2 at once, and
prints each round's throughput ratio. A Ray job's 2-worker speed-up is best read against this
ratio, not against 2.0: on a VM whose two vCPUs share a core's caches or memory bandwidth, two
plain processes with no Ray, no IPC and no scheduling already fall short of 2x.

    python benchmarks/cpu_ceiling.py [--rounds 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import multiprocessing.synchronize
import statistics
import time


def _torch_work(deadline: float) -> int:
    import torch

    torch.set_num_threads(1)
    x, conv = torch.randn(1, 32, 64, 64), torch.nn.Conv2d(32, 32, 3, padding=1)
    done = 0
    with torch.no_grad():
        while time.perf_counter() < deadline:
            conv(x)
            done += 1
    return done


def _numpy_work(deadline: float) -> int:
    import numpy as np

    image = np.random.default_rng(0).integers(0, 65535, (512, 512), dtype=np.uint16)
    done = 0
    while time.perf_counter() < deadline:
        lo, hi = np.percentile(image, (5, 95))
        np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1), 0, 1)
        done += 1
    return done


KINDS = {"torch conv": _torch_work, "numpy stretch": _numpy_work}


def _run(kind: str, seconds: float, start: "mp.synchronize.Barrier", queue: mp.Queue) -> None:
    KINDS[kind](time.perf_counter() + 0.3)  # warm-up (imports, allocations)
    start.wait()  # the processes measure the same stretch of time
    queue.put(KINDS[kind](time.perf_counter() + seconds))


def throughput(kind: str, processes: int, seconds: float) -> float:
    """Items per second of ``processes`` processes doing ``kind`` for ``seconds`` together."""
    queue: mp.Queue = mp.Queue()
    start = mp.Barrier(processes)
    workers = [mp.Process(target=_run, args=(kind, seconds, start, queue)) for _ in range(processes)]
    for w in workers:
        w.start()
    counts = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return sum(counts) / seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    print("| work | 1 process (items/s) | 2 processes (items/s) | speed-up per round | median |")
    print("| --- | ---: | ---: | --- | ---: |")
    for kind in KINDS:
        ones, twos = [], []
        for _ in range(args.rounds):  # interleaved, so a slow spell of the VM hits both
            ones.append(throughput(kind, 1, args.seconds))
            twos.append(throughput(kind, 2, args.seconds))
        ratios = [t / o for o, t in zip(ones, twos)]
        print(f"| {kind} | {statistics.median(ones):.0f} | {statistics.median(twos):.0f} | "
              f"{', '.join(f'{r:.2f}' for r in ratios)} | {statistics.median(ratios):.2f}x |")


if __name__ == "__main__":
    main()
