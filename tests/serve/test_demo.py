"""``microforge demo`` in a real process: renders, trains a tiny U-Net on a tiny budget, serves the
API and GUI, and on Ctrl-C (SIGINT) stops everything it started. The crystal detector is one a
previous demo left behind (reused, so the suite pays for one training launch, not two; the
detector's training is the ``train crystals`` launch that ``tests/evaluate`` runs)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from pathlib import Path

import httpx

from .conftest import save_crystal_detector, shutdown_noise


def _processes() -> dict[int, tuple[str, int, int]]:
    """``{pid: (state, parent pid, process group)}`` of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (fields[0], int(fields[1]), int(fields[2]))
    return table


def own_processes(pid: int) -> set[int]:
    """Live (not zombie) descendants of ``pid`` and members of its process group, ``pid`` excluded."""
    table = _processes()
    found = {p for p, (state, _, group) in table.items() if group == pid and state != "Z"}
    stack = [pid]
    while stack:
        parent = stack.pop()
        for child, (state, ppid, _) in table.items():
            if ppid == parent and child not in found and state != "Z":
                found.add(child)
                stack.append(child)
    found.discard(pid)
    return found


def test_demo_renders_trains_serves_and_stops_on_ctrl_c(tmp_path, unused_port):
    home = tmp_path / "home"
    save_crystal_detector(home / "demo" / "models" / "demo-crystal-detector")
    env = {**os.environ, "MICROFORGE_HOME": str(home), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MICROFORGE_API_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "microforge", "demo", "--port", str(unused_port), "--train-seconds", "3",
         "--images", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    spawned: set[int] = set()
    try:
        deadline = time.monotonic() + 300  # a tiny U-Net trains first
        url = None
        while url is None:
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "no URL printed:\n" + "".join(lines[-40:])
            found = [m for line in list(lines) if (m := re.search(r"microforge demo: open (http://\S+/) ", line))]
            url = found[0].group(1) if found else None
            time.sleep(1.0)
        assert url == f"http://127.0.0.1:{unused_port}/"
        health = httpx.get(f"{url}health", timeout=30).json()
        assert health["ok"] and health["status"] == "ok"
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "<title>microforge</title>" in page.text
        demo = httpx.get(f"{url}demo", params={"seed": 1}, timeout=120).json()
        assert demo["ok"] and demo["model_info"]["id"] == "demo-unet", demo
        listed = httpx.get(f"{url}available_models", timeout=30).json()
        types = {m["id"]: m["type"] for m in listed["models"]}
        assert types["demo-unet"] == "segmentation" and types["demo-crystal-detector"] == "detector"
        # The Inference and Time-lapse tabs start on the trained crystal detector, not the contours.
        assert listed["selected"]["detector"] == "demo-crystal-detector"
        spawned = own_processes(process.pid)
        assert spawned, "the demo started no Ray processes"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        reader.join(timeout=10)
    output = "".join(lines)
    assert process.returncode == 0, output[-4000:]
    assert "microforge demo: stopped" in output
    assert not shutdown_noise(output), shutdown_noise(output)  # a clean Ctrl-C reads clean
    assert "PreemptionWatcher" not in output  # Ray Train's watcher is off in an embedded Ray (its E line)
    for step in ("[1/3] rendering", "[2/3] training", "[3/3] starting", "reusing the last demo crystal detector"):
        assert step in output, step
    def left() -> list[int]:  # what the demo started and is still running (pids are not reused this fast)
        table = _processes()
        return sorted(p for p in spawned | own_processes(process.pid) if p in table and table[p][0] != "Z")

    deadline = time.monotonic() + 30
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left(), f"processes left behind: {left()}"
    # What the next demo reuses: the dataset and the installed model.
    demo_dir = home / "demo"
    assert json.loads((demo_dir / "data" / "datasets" / "demo-crystals" / "dataset.json").read_text())
    assert (demo_dir / "models" / "demo-unet" / "model.json").is_file()
    assert (demo_dir / "models" / "demo-crystal-detector" / "model.json").is_file()
    card = json.loads((demo_dir / "models" / "demo-unet" / "model.json").read_text())
    assert card["provenance"]["options"]["blob_preset"] == "robust"  # the served demo model holds off-recipe
    assert card["preprocessing"]["scale"]["image_size"] == 64
