"""Load test of ``POST /predict``: Ray Serve (dynamic batching, autoscaling) against a plain server.

    python benchmarks/serve_load.py [--quick] [--cpus N] [--gpus G] [--model ARTIFACT_DIR | --preset tiny]
                                    [--size 256]

Both servers load the same U-Net artifact (by default a freshly initialised ``tiny`` U-Net, which
costs what a trained one costs) and answer the same request: a PNG in, the binary mask PNG out.
Both run on the GPU when there is one (``--gpus 0`` keeps them on the CPU).

0. **headroom**: before any server starts, the model's forward pass is timed in this process at
   batch sizes 1..32. Batching can only pay where images per second grow with the batch: on a
   GPU they do by an order of magnitude, on a CPU they barely do, since one image already keeps
   the cores busy.

1. **plain**: one FastAPI + uvicorn process (a subprocess of this script) that predicts one image
   per request, the way the original tools served models (the endpoint is a ``def``, so requests
   run in uvicorn's thread pool; torch uses every core it may).
2. **serve**: the microforge application on a local Ray with the same CPU count, the
   ``SegmentationModel`` deployment autoscaling between 1 and ``--max-replicas`` replicas
   and batching concurrent requests (``@serve.batch``).

A closed-loop generator (asyncio + httpx: each of C clients sends its next request as soon as the
previous one returns) drives each server at C = 1, 2, 4, ... for a bounded time and request count.
The replica count of ``SegmentationModel`` is polled from ``serve.status()`` during the run and
for a while after it, to show replicas added under load and removed after. Finally
``/synth_preview`` is timed on the ``standard`` preset (the original GUI took 3-7 s).

Only 127.0.0.1 is used. ``--cpus N`` pins this script and everything it starts to N cores. On
CPUs Ray runs each replica's torch with as many threads as it reserves CPUs (at least one), so a
single replica uses fewer cores than the plain server until the autoscaler adds replicas. With a
GPU the replicas share it (each reserves ``gpus / max_replicas``).
Targets (issue 5): at least 2x the plain server's throughput, p99 under 1 s where throughput peaks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from microforge.platform.runtime import apply_default_env  # noqa: E402

apply_default_env()  # the environment microforge's own Ray gets (Serve's throughput-optimised path)

# At module level: FastAPI resolves the plain server's (string) annotations in this module's globals.
from fastapi import File, UploadFile  # noqa: E402

MODEL_ID = "bench-unet"
APP_NAME = "microforge-bench"


# --- the plain server (run by this script as a subprocess) -------------------------------------------

def plain_server(models_dir: str, port: int) -> None:
    """FastAPI + uvicorn, one process, one image per forward pass."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import Response

    from microforge.serve.images import decode_image, encode, to_gray
    from microforge.serve.segmentation import load_segmentation

    net = load_segmentation(models_dir, MODEL_ID)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/predict", response_class=Response)
    def predict(file: UploadFile = File(...)):
        image = decode_image(file.file.read(), max_side=8192, max_pixels=40_000_000)
        prob = net.predict([to_gray(image)])[0]
        mask = (prob > net.threshold).astype("uint8") * 255
        return Response(encode(mask, ".png"), media_type="image/png")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# --- helpers ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy within {timeout:.0f} s")


def make_artifact(models_dir: Path, source: str | None, preset: str) -> None:
    """``models_dir/bench-unet``: a copy of ``source``, or a freshly initialised U-Net of ``preset``."""
    import shutil

    from microforge.platform.artifact import ComponentWeights, read_artifact, save_artifact

    if source:
        read_artifact(source)  # verified before it is served
        shutil.copytree(source, models_dir / MODEL_ID, dirs_exist_ok=True)
        return
    from microforge.trainers.unet import unet_from_preset

    model = unet_from_preset(preset)
    save_artifact(models_dir / MODEL_ID,
                  {"model": ComponentWeights("microforge.trainers.unet.model:AttentionUNet", model.config,
                                             model.state_dict())},
                  workload="delineation", task="segment", transform={"name": "unit_range", "params": {}},
                  preprocessing={"channels": 1, "image_size": 256, "size_multiple": 8, "threshold": 0.0},
                  metrics={}, provenance={"benchmark": "serve_load", "weights": "random init"})


def test_image(size: int) -> bytes:
    """A delineation input: a blob pattern under noise, as PNG bytes."""
    import numpy as np

    from microforge.datasets.blobs import BlobConfig, render_blob
    from microforge.serve.images import encode

    sample = render_blob(BlobConfig.load({"size": size}), 0, 0)
    return encode(np.clip(sample.image * 255, 0, 255).astype(np.uint8), ".png")


def forward_headroom(models_dir: Path, payload: bytes, batches: list[int], seconds: float = 2.0) -> list[dict]:
    """Images per second of the model's forward pass (``SegmentationNet.predict``, the call both
    servers make; both pass the decoded gray image in its own dtype, as here) at
    each batch size, on the device the servers use, with all of this process's cores."""
    from microforge.serve.images import decode_image, to_gray
    from microforge.serve.segmentation import load_segmentation

    net = load_segmentation(models_dir, MODEL_ID)
    image = to_gray(decode_image(payload, max_side=8192, max_pixels=40_000_000))  # as Serve's replicas get it
    rows = []
    for batch in batches:
        images = [image] * batch
        net.predict(images)  # warm-up (cuDNN autotuning, allocator)
        began, n = time.perf_counter(), 0
        while n < 3 or time.perf_counter() - began < seconds:
            net.predict(images)  # returns host arrays, so GPU work is complete
            n += 1
        per_batch = (time.perf_counter() - began) / n
        rows.append({"batch": batch, "ms": per_batch * 1000, "ips": batch / per_batch})
    del net
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


# --- the closed-loop load generator ----------------------------------------------------------------

async def closed_loop(url: str, payload: bytes, concurrency: int, seconds: float, max_requests: int,
                      timeout: float, start_at: float | None = None) -> dict:
    """``concurrency`` clients, each sending its next request when the previous one returns, until
    ``seconds`` have passed or ``max_requests`` were sent. Raw latencies, for :func:`summarise`."""
    import httpx

    latencies: list[float] = []
    batches: list[int] = []
    errors = 0
    first_error: list[str] = []
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        if start_at is not None:  # processes of one level start together
            await asyncio.sleep(max(0.0, start_at - time.time()))
        start = time.perf_counter()
        deadline = start + seconds

        async def client_loop() -> None:
            nonlocal errors, sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                began = time.perf_counter()
                try:
                    response = await client.post(url, files={"file": ("image.png", payload, "image/png")})
                    good = response.status_code == 200
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    good, response, problem = False, None, f"{type(exc).__name__}: {exc}"
                if good:
                    latencies.append(time.perf_counter() - began)
                    if "x-batch-size" in response.headers:
                        batches.append(int(response.headers["x-batch-size"]))
                else:
                    errors += 1
                    first_error[:] = first_error or [problem]

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"latencies": latencies, "batches": batches, "errors": errors, "seconds": elapsed,
            "first_error": first_error[0] if first_error else ""}


def _closed_loop_process(*args) -> dict:
    return asyncio.run(closed_loop(*args))


def summarise(concurrency: int, parts: list[dict]) -> dict:
    latencies = [x for part in parts for x in part["latencies"]]
    batches = [x for part in parts for x in part["batches"]]
    elapsed = max(part["seconds"] for part in parts)
    return {"concurrency": concurrency, "ok": len(latencies), "errors": sum(part["errors"] for part in parts),
            "seconds": elapsed, "rps": len(latencies) / elapsed, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "batch": statistics.fmean(batches) if batches else None,
            "first_error": next((part["first_error"] for part in parts if part["first_error"]), "")}


def load(url: str, payload: bytes, concurrency: int, seconds: float, max_requests: int,
         args: argparse.Namespace) -> dict:
    """One closed-loop level, split over ``args.client_processes`` processes (one Python process
    with asyncio + httpx tops out at a few hundred requests per second, below a GPU server)."""
    processes = max(1, min(args.client_processes, concurrency))
    if processes == 1:
        return summarise(concurrency, [asyncio.run(closed_loop(url, payload, concurrency, seconds, max_requests,
                                                                args.timeout))])
    start_at = time.time() + 2.0  # the pool's processes are started by then
    futures = [args.pool.submit(_closed_loop_process, url, payload, len(range(i, concurrency, processes)), seconds,
                                len(range(i, max_requests, processes)), args.timeout, start_at)
               for i in range(processes)]
    return summarise(concurrency, [future.result() for future in futures])


def run_levels(name: str, url: str, payload: bytes, args: argparse.Namespace, on_level=None) -> list[dict]:
    load(url, payload, 2, 60, args.warmup, args)  # warm-up, not reported
    results = []
    for concurrency in args.levels:
        if on_level is not None:
            on_level(f"C={concurrency}")
        result = load(url, payload, concurrency, args.seconds, args.max_requests, args)
        batch = f", mean batch {result['batch']:.1f}" if result["batch"] else ""
        print(f"  {name:<6} C={concurrency:<3} {result['rps']:7.1f} req/s  p50 {result['p50'] * 1000:7.0f} ms  "
              f"p99 {result['p99'] * 1000:7.0f} ms  ({result['ok']} ok, {result['errors']} errors{batch})", flush=True)
        if result["errors"]:
            print(f"         first failure: {result['first_error']}", flush=True)
        results.append(result)
    return results


# --- replica monitor -------------------------------------------------------------------------------

class ReplicaMonitor:
    """Polls ``serve.status()`` once a second: the running replicas of SegmentationModel over time."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, str, int, int]] = []  # (t, phase, running, all states)
        self.phase = "idle"
        self.stop = threading.Event()
        self.start = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def running(self) -> tuple[int, int]:
        from ray import serve

        dep = serve.status().applications[APP_NAME].deployments["SegmentationModel"]
        states = {str(getattr(k, "value", k)): v for k, v in dep.replica_states.items()}
        return states.get("RUNNING", 0), sum(states.values())

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                running, total = self.running()
                self.samples.append((time.monotonic() - self.start, self.phase, running, total))
            except Exception:  # the application may be redeploying; the next poll will tell
                pass
            self.stop.wait(1.0)

    def timeline(self) -> list[tuple[float, str, int, int]]:
        """The samples where the phase or the replica counts change (and the last one)."""
        rows, last = [], None
        for sample in self.samples:
            key = sample[1:]
            if key != last:
                rows.append(sample)
                last = key
        if self.samples and rows[-1] is not self.samples[-1]:
            rows.append(self.samples[-1])
        return rows


# --- the two runs ----------------------------------------------------------------------------------

def bench_plain(models_dir: Path, payload: bytes, args: argparse.Namespace) -> list[dict]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--plain-server", str(models_dir), "--port", str(port)])
    try:
        wait_healthy(f"http://127.0.0.1:{port}", 120, process)
        print(f"plain FastAPI + uvicorn (1 process) on 127.0.0.1:{port}; {load_note()}", flush=True)
        return run_levels("plain", f"http://127.0.0.1:{port}/predict", payload, args)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def serve_config(tmp: Path, port: int, args: argparse.Namespace):
    from microforge.serve.config import ServeConfig

    light = {"ray_actor_options": {"num_cpus": 0.1}}
    model_options = {"num_cpus": max(0.1, (args.cpus - 0.3 * args.ingress_replicas) / args.max_replicas),
                     "num_gpus": args.gpus / args.max_replicas}
    return ServeConfig.load({
        "host": "127.0.0.1", "port": port, "data_root": str(tmp / "data"), "models_dir": str(tmp / "models"),
        "segmentation_model": MODEL_ID, "state_actor": f"bench-state-{uuid.uuid4().hex[:8]}",
        "deployments": {
            "Ingress": {"num_replicas": args.ingress_replicas, "max_ongoing_requests": 256, **light},
            "SegmentationModel": {
                "autoscaling": {"min_replicas": 1, "max_replicas": args.max_replicas,
                                "target_ongoing_requests": args.target_ongoing, "upscale_delay_s": 2.0,
                                "downscale_delay_s": args.downscale_delay},
                # Logical CPUs: max_replicas replicas share the CPUs (Ray gives each that many torch
                # threads) and the GPUs.
                "ray_actor_options": model_options,
                "max_batch_size": args.batch, "batch_wait_timeout_s": args.batch_wait,
                # Room for several batches: a replica at this cap makes the router back off.
                "max_ongoing_requests": max(256, 4 * args.batch)},
            "Detector": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
            "CrystalRenderer": {"num_replicas": 1, **light},
        },
    })


def time_synth_preview(url: str, n: int) -> dict:
    import httpx

    with httpx.Client(base_url=url, timeout=300) as client:
        config = client.get("/synth_get_preset", params={"name": "standard"}).json()["config"]
        times, generate = [], []
        for seed in range(n + 1):
            began = time.perf_counter()
            body = client.post("/synth_preview", json={"t": 0.5, "config": config, "seed": seed}).json()
            assert body["ok"], body
            times.append(time.perf_counter() - began)
            generate.append(body["timings"]["generate_s"])
    return {"size": f"{config['width']}x{config['height']}", "cold": times[0], "cold_generate": generate[0],
            "median": statistics.median(times[1:]), "min": min(times[1:]), "max": max(times[1:]),
            "generate": statistics.median(generate[1:])}


def time_stages(url: str, payload: bytes, n: int) -> dict:
    """Median time of each stage of one request at a time, from ``/predict/json``'s own timings."""
    import httpx

    rows = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(n + 3):
            began = time.perf_counter()
            body = client.post("/predict/json", files={"file": ("image.png", payload, "image/png")}).json()
            assert body.get("ok"), body
            rows.append({**body["timings"], "round_trip_s": time.perf_counter() - began})
    rows = rows[3:]
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def bench_serve(tmp: Path, payload: bytes, args: argparse.Namespace) -> tuple[list[dict], list, dict, dict]:
    import ray
    from ray import serve

    from microforge.serve.app import build_app
    from microforge.serve.state import kill_state

    port = free_port()
    config = serve_config(tmp, port, args)
    ray.init(num_cpus=args.cpus, num_gpus=args.gpus, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    monitor = ReplicaMonitor()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config), name=APP_NAME, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, 180)
        print(f"Ray Serve on 127.0.0.1:{port}: SegmentationModel autoscaling 1..{args.max_replicas} replicas "
              f"(target {args.target_ongoing:g} ongoing requests each), batches up to {args.batch} "
              f"(wait {args.batch_wait * 1000:.0f} ms); {load_note()}", flush=True)
        stages = time_stages(url, payload, 30)
        monitor.thread.start()

        def phase(label: str) -> None:
            monitor.phase = label

        results = run_levels("serve", f"{url}/predict", payload, args, on_level=phase)
        # Serve's autoscaler averages ongoing requests over a look-back window (30 s by default),
        # so replicas arrive some seconds into sustained load: hold the top level for a while.
        top = max(args.levels)
        phase(f"hold C={top}")
        held = load(f"{url}/predict", payload, top, args.hold, 10 * args.max_requests, args)
        held["concurrency"] = f"{top} held"
        held["replicas"] = monitor.running()[0]
        print(f"  serve  C={top} held {args.hold:g} s: {held['rps']:.1f} req/s  p50 {held['p50'] * 1000:.0f} ms  "
              f"p99 {held['p99'] * 1000:.0f} ms, {held['replicas']} replica(s) running at the end", flush=True)
        results.append(held)
        phase("after load")
        deadline = time.monotonic() + args.downscale_delay + args.settle
        while time.monotonic() < deadline:  # until the autoscaler is back at min_replicas
            running, total = monitor.running()
            if running <= 1 and total <= 1:
                break
            time.sleep(1.0)
        time.sleep(1.5)  # one more sample
        phase("synth preview")
        synth = time_synth_preview(url, args.previews)
        monitor.stop.set()
        return results, monitor.timeline(), synth, stages
    finally:
        monitor.stop.set()
        serve.shutdown()
        kill_state(config.state_actor)
        ray.shutdown()


# --- main ------------------------------------------------------------------------------------------

def print_tables(headroom: list[dict], plain: list[dict], served: list[dict], timeline: list, synth: dict,
                 stages: dict, args) -> None:
    print(f"\n== forward pass alone ({args.device}, U-Net '{args.preset if not args.model else args.model}', "
          f"image {args.size}x{args.size}): what batching can gain ==")
    print(f"{'batch':>5} | {'ms/batch':>9} | {'images/s':>9} | {'vs batch 1':>10}")
    for row in headroom:
        print(f"{row['batch']:>5} | {row['ms']:>9.1f} | {row['ips']:>9.1f} | {row['ips'] / headroom[0]['ips']:>9.2f}x")

    print("\n== /predict throughput and latency (closed loop, same machine, "
          f"{args.cpus} CPU core(s), {args.device}, image {args.size}x{args.size}) ==")
    header = (f"{'C':>8} | {'plain req/s':>11} {'p50 ms':>7} {'p99 ms':>7} | {'serve req/s':>11} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'batch':>5} | {'speed-up':>8}")
    print(header)
    print("-" * len(header))
    top_plain = max(plain, key=lambda r: r["concurrency"])
    for s in served:  # the held level compares with the plain server at the same concurrency
        p = next((r for r in plain if r["concurrency"] == s["concurrency"]), top_plain)
        batch = f"{s['batch']:.1f}" if s["batch"] else "-"
        print(f"{s['concurrency']:>8} | {p['rps']:>11.1f} {p['p50'] * 1000:>7.0f} {p['p99'] * 1000:>7.0f} | "
              f"{s['rps']:>11.1f} {s['p50'] * 1000:>7.0f} {s['p99'] * 1000:>7.0f} {batch:>5} | "
              f"{s['rps'] / p['rps'] if p['rps'] else float('nan'):>7.2f}x")
    best_p, best_s = max(plain, key=lambda r: r["rps"]), max(served, key=lambda r: r["rps"])
    errors = sum(r["errors"] for r in plain + served)
    print(f"peak: plain {best_p['rps']:.1f} req/s at C={best_p['concurrency']} (p99 {best_p['p99'] * 1000:.0f} ms); "
          f"serve {best_s['rps']:.1f} req/s at C={best_s['concurrency']} (p99 {best_s['p99'] * 1000:.0f} ms); "
          f"ratio {best_s['rps'] / best_p['rps'] if best_p['rps'] else float('nan'):.2f}x "
          f"(target >= 2x, p99 < 1000 ms); {errors} failed requests")

    print("\n== one Serve request at a time, by stage (/predict/json timings, medians of 30) ==")
    ms = {key: value * 1000 for key, value in stages.items()}
    print(f"client round trip {ms['round_trip_s']:.1f} ms = HTTP proxy and transfer "
          f"{ms['round_trip_s'] - ms['total_s']:.1f} + ingress {ms['total_s']:.1f} ms; the ingress: decode "
          f"{ms['decode_s']:.1f}, model call {ms['predict_s']:.1f} (forward pass in the replica {ms['infer_s']:.1f}, "
          f"batch wait up to {args.batch_wait * 1000:.0f}), encode and rest "
          f"{ms['total_s'] - ms['decode_s'] - ms['predict_s']:.1f}")

    print("\n== SegmentationModel replicas over time (serve.status(), polled every second) ==")
    print(f"{'t (s)':>6}  {'phase':<14} {'running':>7} {'all states':>10}")
    for t, phase, running, total in timeline:
        print(f"{t:>6.0f}  {phase:<14} {running:>7} {total:>10}")

    print("\n== /synth_preview, preset 'standard' "
          f"({synth['size']}, t = 0.5; the original GUI took 3-7 s) ==")
    print(f"first request (renderer warm-up): {synth['cold']:.2f} s (render {synth['cold_generate']:.2f} s)")
    print(f"next {args.previews}: median {synth['median']:.2f} s, min {synth['min']:.2f} s, max {synth['max']:.2f} s "
          f"round trip (render {synth['generate']:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few minutes: 5 s per level, 300 requests at most")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="cores for both servers (default: all)")
    parser.add_argument("--gpus", type=float, default=None,
                        help="GPUs for both servers (default: 1 when torch sees CUDA, else 0)")
    parser.add_argument("--model", default=None, help="U-Net artifact directory (default: a fresh --preset U-Net)")
    parser.add_argument("--preset", default="tiny", help="U-Net preset when no --model is given (default tiny)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--levels", type=int, nargs="+", default=None,
                        help="concurrency levels (default 1 2 4 ... 32; up to 128 with a GPU)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per level (default 20; --quick 5)")
    parser.add_argument("--max-requests", type=int, default=None, help="requests per level (default 3000; --quick 300)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests before the levels")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument("--max-replicas", type=int, default=None,
                        help="SegmentationModel replicas at most (default: cpus, at least 2; 4 with a GPU)")
    parser.add_argument("--ingress-replicas", type=int, default=None,
                        help="Ingress replicas (decode and encode the PNGs; default 1; 4 with a GPU)")
    parser.add_argument("--target-ongoing", type=float, default=4.0, help="autoscaling target_ongoing_requests")
    parser.add_argument("--batch", type=int, default=None, help="max_batch_size (default 8; 32 with a GPU)")
    parser.add_argument("--batch-wait", type=float, default=None,
                        help="batch_wait_timeout_s (default 0.01; 0.005 with a GPU)")
    parser.add_argument("--client-processes", type=int, default=None,
                        help="load-generator processes (default: 1, or a quarter of the cores past 4)")
    parser.add_argument("--downscale-delay", type=float, default=None,
                        help="downscale_delay_s (default 30; --quick 10)")
    parser.add_argument("--hold", type=float, default=None,
                        help="seconds of load at the top level after the sweep (default 90; --quick 40)")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds past downscale_delay_s to wait for replicas being removed")
    parser.add_argument("--previews", type=int, default=5, help="timed /synth_preview requests")
    parser.add_argument("--plain-server", metavar="MODELS_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.plain_server:
        return plain_server(args.plain_server, args.port)
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    args.max_requests = args.max_requests or (300 if args.quick else 3000)
    args.hold = args.hold or (40.0 if args.quick else 90.0)
    args.downscale_delay = args.downscale_delay if args.downscale_delay is not None else (10.0 if args.quick else 30.0)
    if args.gpus is None:
        import torch

        args.gpus = 1.0 if torch.cuda.is_available() else 0.0
    gpu = args.gpus > 0
    if not gpu:  # the plain server and the headroom pass too (Ray hides GPUs from replicas that reserve none)
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    args.device = "GPU" if gpu else "CPU"
    args.levels = args.levels or ([1, 2, 4, 8, 16, 32, 64, 128] if gpu else [1, 2, 4, 8, 16, 32])
    args.max_replicas = args.max_replicas or (4 if gpu else max(2, args.cpus))
    args.ingress_replicas = args.ingress_replicas or (4 if gpu else 1)
    args.batch = args.batch or (32 if gpu else 8)
    args.batch_wait = args.batch_wait if args.batch_wait is not None else (0.005 if gpu else 0.01)
    args.client_processes = args.client_processes or (1 if args.cpus <= 4 else min(8, args.cpus // 4))
    if args.cpus < os.cpu_count():  # children (uvicorn, Ray and its workers) inherit the affinity
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cpus])

    started = time.perf_counter()
    print(f"serve_load: {args.cpus} core(s), {args.gpus:g} GPU(s), levels {args.levels}, {args.seconds:g} s / "
          f"{args.max_requests} requests per level; {load_note()}", flush=True)
    args.pool = None
    if args.client_processes > 1:
        args.pool = ProcessPoolExecutor(args.client_processes, mp_context=multiprocessing.get_context("spawn"))
        list(args.pool.map(time.sleep, [0.5] * args.client_processes))  # start them now
    with args.pool or contextlib.nullcontext(), \
            tempfile.TemporaryDirectory(prefix="microforge-serve-load-") as tmp_name:
        tmp = Path(tmp_name)
        make_artifact(tmp / "models", args.model, args.preset)
        payload = test_image(args.size)
        headroom = forward_headroom(tmp / "models", payload, [1, 2, 4, 8, 16, 32])
        plain = bench_plain(tmp / "models", payload, args)
        served, timeline, synth, stages = bench_serve(tmp, payload, args)
    print_tables(headroom, plain, served, timeline, synth, stages, args)
    print(f"\n{load_note()} at the end; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
