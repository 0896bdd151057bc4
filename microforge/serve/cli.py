"""CLI groups ``serve`` (``serve up`` runs the API in the foreground, ``serve status`` asks a running
one) and ``demo`` (renders, trains and serves in one go)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from ..platform.cli import add_address_argument
from ..platform.errors import MicroforgeError


def register(groups: argparse._SubParsersAction) -> None:
    serve = groups.add_parser("serve", help="serve models, renderers and the web GUI over HTTP")
    commands = serve.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser("up", help="run the API in the foreground (Ctrl-C stops it and its Ray)")
    up.add_argument("--config", default=None, help="serve config (YAML/JSON): limits, scaling, CORS")
    up.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    up.add_argument("--data-root", default=None, help="uploads, presets, datasets (default <state dir>/serve/data)")
    up.add_argument("--models-dir", default=None, help="models the server may load (default <state dir>/models)")
    add_address_argument(up)
    up.set_defaults(func=_serve_up)

    status = commands.add_parser("status", help="health, models and replicas of a running server")
    status.add_argument("--url", default="http://127.0.0.1:8000", help="server URL (default %(default)s)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=_serve_status)

    demo = groups.add_parser(
        "demo", help="render crystals, train a tiny U-Net, serve both with the web GUI (Ctrl-C stops)",
        description="On an embedded local Ray: render a small crystal dataset, train a tiny U-Net for about "
                    "a minute (or reuse the last demo model, kept under <state dir>/demo/), and serve both with "
                    "the web GUI until Ctrl-C.")
    demo.add_argument("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    demo.add_argument("--port", type=int, default=8000, help="HTTP port (default %(default)s)")
    demo.add_argument("--retrain", action="store_true", help="train a new U-Net even if a demo model exists")
    demo.add_argument("--train-seconds", type=float, default=60.0, help="training budget (default %(default)g)")
    demo.add_argument("--images", type=int, default=16, help="crystal images to render (default %(default)s)")
    demo.set_defaults(func=_demo)


def _serve_up(args: argparse.Namespace) -> int:
    from .app import run_foreground
    from .config import load_serve_config

    config = load_serve_config(args.config, host=args.host, port=args.port, data_root=args.data_root,
                               models_dir=args.models_dir).resolved()
    _warn_open_bind(config.host, config.api_token)

    def ready(url: str) -> None:
        print(f"microforge serve: {url} (API docs at {url}docs); data root {config.data_root}, "
              f"models {config.models_dir}. Ctrl-C to stop.", flush=True)

    run_foreground(config, address=args.address, on_ready=ready)
    print("microforge serve: stopped", flush=True)
    return 0


def _warn_open_bind(host: str, token: str | None) -> None:
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"microforge: warning: binding {host} without MICROFORGE_API_TOKEN: anyone who can reach "
              "this port can upload files and start jobs", file=sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    import os

    from .config import TOKEN_ENV
    from .demo import run_demo

    _warn_open_bind(args.host, os.environ.get(TOKEN_ENV))

    run_demo(host=args.host, port=args.port, retrain=args.retrain, train_seconds=args.train_seconds,
             images=args.images, say=lambda line: print(line, flush=True))
    print("microforge demo: stopped", flush=True)
    return 0


def _get(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise MicroforgeError(f"{url} answered {exc.code}: {exc.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MicroforgeError(f"no microforge server at {url} ({getattr(exc, 'reason', exc)}); "
                              "start one with `microforge serve up`") from None


def _serve_status(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    health, system = _get(f"{base}/health"), _get(f"{base}/system_info")
    if args.json:
        print(json.dumps({"health": health, "system_info": system}, indent=2))
        return 0 if health.get("status") == "ok" else 1
    print(f"server: {base}  status: {health.get('status')}  device: {health.get('device')}")
    selected = health.get("models", {}).get("selected", {})
    print("models: " + ", ".join(f"{role} {model or '(auto)'}" for role, model in selected.items()))
    batching = health.get("batching", {})
    print(f"batching: max {batching.get('max_batch_size')}, wait {batching.get('batch_wait_timeout_s')} s, "
          f"largest batch seen {batching.get('max_batch_seen', 0)}")
    ray_info = system.get("ray", {})
    resources = ray_info.get("cluster_resources", {})
    print(f"ray: {ray_info.get('nodes')} node(s), {resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU")
    for name, dep in sorted(system.get("deployments", {}).items()):
        replicas = ", ".join(f"{state.lower()} {n}" for state, n in sorted(dep.get("replicas", {}).items()))
        print(f"  {name}: {dep.get('status', '?').lower()} ({replicas or 'no replicas'})")
    return 0 if health.get("status") == "ok" else 1


