"""Doubling + bisection against the original tool's linear scan: probes and wall time, same answer.

    python benchmarks/batch_search.py [--workload delineation] [--preset tiny] [--resolution 128] [--extra 600MiB] [--skip-real]
    python benchmarks/batch_search.py --device gpu --preset small --resolution 256 --linear-max 64

Two tables:

* ``analytic``: probes each method makes from batch 1 when the largest batch that fits is L
  (doubling + bisection: ``2 * floor(log2 L) + 2``; linear scan ``1, 2, 3, ...``: ``L + 1``).
* ``real``: both methods run real probes, each in a fresh Ray actor process, exactly as
  ``microforge tune batch-size`` does. On CPUs the memory budget is the peak RSS of a batch-1
  probe plus ``--extra`` (so the limit lands at a few dozen samples whatever the machine's
  baseline); on a GPU the card's memory is the limit and ``--linear-max`` caps the linear scan
  (which would otherwise take L + 1 probes), the bisection is then capped alike for a fair answer.
  Wall time includes starting each probe's process, which is most of a small probe's cost.
"""

from __future__ import annotations

import argparse
import os
import time

from microforge.platform.precision import normalize_precision
from microforge.trainers.workload import get_workload
from microforge.tune.batch_search import parse_memory
from microforge.tune.bisection import analytic_probe_count, linear_scan, search_batch_size
from microforge.tune.probe import format_bytes
from microforge.tune.probe_actor import ProbeSettings, probe_in_fresh_actor

LIMITS = (1, 3, 8, 13, 24, 50, 100, 256, 500, 1000, 4096)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))


def analytic() -> None:
    rows = []
    for limit in LIMITS:
        bisect, linear = analytic_probe_count(limit), analytic_probe_count(limit, "linear")
        rows.append([str(limit), str(bisect), str(linear), f"{linear / bisect:.1f}x"])
    print("\nanalytic: probes from batch 1 to find the largest batch L that fits")
    print_table(["L", "doubling+bisection", "linear scan", "fewer probes"], rows)


def real(args: argparse.Namespace) -> None:
    import ray

    from microforge.platform.runtime import ray_runtime

    with ray_runtime(None, num_cpus=args.cpus):
        use_gpu = args.device == "gpu"
        workload = get_workload(args.workload)
        base = ProbeSettings(workload=workload, resolution=args.resolution,
                             precision=normalize_precision(args.precision, allow_auto=False),
                             use_gpu=use_gpu, memory_budget_bytes=None, threads=1, warmup_steps=1, measure_steps=2)
        budget = None
        if not use_gpu:
            baseline = probe_in_fresh_actor(base, args.preset, 1, timeout_s=args.timeout)
            budget = baseline.peak_memory_bytes + parse_memory(args.extra)
            print(f"\nbatch-1 peak RSS {format_bytes(baseline.peak_memory_bytes)}; budget {format_bytes(budget)}")
        settings = ProbeSettings(**{**base.__dict__, "memory_budget_bytes": budget})

        def probe(batch_size: int):
            return probe_in_fresh_actor(settings, args.preset, batch_size, timeout_s=args.timeout)

        rows, sequences = [], []
        for name, run in (("doubling+bisection", lambda: search_batch_size(probe, max_batch=args.linear_max)),
                          ("linear scan", lambda: linear_scan(probe, max_batch=args.linear_max))):
            started = time.perf_counter()
            result = run()
            seconds = time.perf_counter() - started
            sequences.append((name, result))
            rows.append([name, f"{result.max_batch}{'+' if result.capped else ''}", str(len(result.probes)),
                         f"{seconds:.1f}", f"{seconds / len(result.probes):.1f}", str(result.best_batch),
                         f"{result.best.samples_per_s:.1f}", format_bytes(result.largest.peak_memory_bytes)])
        device = "GPU" if use_gpu else f"CPU, budget {format_bytes(budget)}"
        load = os.getloadavg()[0]
        print(f"\nreal: {workload.name} {args.preset} at {args.resolution} px, {args.precision}, {device} "
              f"(Ray {ray.__version__}; load average {load:.1f} on {os.cpu_count()} cores)")
        print_table(["method", "max batch", "probes", "wall s", "s/probe", "best batch", "samples/s", "peak"], rows)
        for name, result in sequences:
            print(f"{name}: " + " ".join(f"{p.batch_size}:{p.status}" for p in result.probes))
        if rows[0][1] != rows[1][1]:
            print("note: the answers differ: memory was not monotonic in the batch size near the limit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", "--trainer", dest="workload", default="delineation")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--extra", default="600MiB", help="CPU: budget above the batch-1 peak RSS")
    parser.add_argument("--linear-max", type=int, default=None, help="cap both searches (GPU: the linear scan is long)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    parser.add_argument("--skip-real", action="store_true", help="only the analytic table")
    args = parser.parse_args()
    analytic()
    if not args.skip_real:
        real(args)


if __name__ == "__main__":
    main()
