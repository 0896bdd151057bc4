"""``microforge serve up`` in a real process: serves, answers ``serve status``, and on SIGTERM stops
Serve and the Ray it started, leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import shutdown_noise


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, stack = _children(), set(), [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def listen_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_serve_up_status_and_clean_shutdown(tmp_path, unused_port):
    port = unused_port
    config = tmp_path / "serve.yaml"
    config.write_text(
        "deployments:\n"
        "  Ingress: {ray_actor_options: {num_cpus: 0}}\n"
        "  SegmentationModel:\n"
        "    autoscaling: {min_replicas: 1, max_replicas: 2, target_ongoing_requests: 2}\n"
        "    ray_actor_options: {num_cpus: 0}\n"
        "  Detector: {ray_actor_options: {num_cpus: 0}}\n"
        "  CrystalRenderer: {ray_actor_options: {num_cpus: 0}}\n")
    env = {**os.environ, "MICROFORGE_HOME": str(tmp_path / "home"), "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MICROFORGE_API_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "microforge", "serve", "up", "--config", str(config), "--port", str(port),
         "--data-root", str(tmp_path / "data"), "--models-dir", str(tmp_path / "models")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve up did not become healthy"
            time.sleep(1.0)
        status = subprocess.run([sys.executable, "-m", "microforge", "serve", "status", "--url", url],
                                env=env, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "status: ok" in status.stdout and "SegmentationModel: healthy" in status.stdout
        assert (tmp_path / "data").is_dir() and (tmp_path / "models").is_dir()
        assert listen_addresses(port) == {"127.0.0.1"}  # the default bind
        spawned = descendants(process.pid)
        assert spawned, "serve up started no Ray processes"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert process.returncode == 0, output
    assert "microforge serve: stopped" in output
    assert not shutdown_noise(output), shutdown_noise(output)  # a clean stop reads clean
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [pid for pid in spawned if alive(pid)]
    assert not left, f"processes left behind: {left}"
    status = subprocess.run([sys.executable, "-m", "microforge", "serve", "status", "--url", url],
                            env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 2 and "no microforge server" in status.stderr
