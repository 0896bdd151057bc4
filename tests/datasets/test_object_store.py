"""Datasets on an S3-compatible object store: a moto server process on 127.0.0.1, started here."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from microforge.datasets.crystals import CrystalConfig, generate_dataset, load_preset, render_crystal
from microforge.datasets.manifest import manifest_dataset, read_info, read_manifest
from microforge.platform.cli import main

pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
pafs = pytest.importorskip("pyarrow.fs")

SMALL = {"width": 96, "height": 64, "n_rods_rng_lo_hi": [2, 5], "rod_len_px_lo_hi": [10, 30]}
BUCKET = "microforge-test"
KEYS = {"access_key": "testing", "secret_key": "testing"}


def small_config(**overrides) -> CrystalConfig:
    return CrystalConfig.load({**load_preset("default").to_json_dict(), **SMALL, **overrides})


@pytest.fixture(scope="module")
def s3():
    """(URI of a prefix, pyarrow S3FileSystem) on a moto server that lives as long as the module."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("the moto S3 server did not start")
                time.sleep(0.2)
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                               allow_bucket_creation=True, **KEYS)
        fs.create_dir(BUCKET)

        def uri(name: str) -> str:
            return (f"s3://{KEYS['access_key']}:{KEYS['secret_key']}@{BUCKET}/{name}"
                    f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1")
        yield uri, fs
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def objects(fs, prefix: str) -> dict[str, bytes]:
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as fh:
                out[info.path[len(BUCKET) + len(prefix) + 2:]] = fh.read()
    return out


def test_shards_round_trip_through_s3_and_resume(ray_local, s3, capsys):
    uri, fs = s3
    summary = generate_dataset(small_config(), 5, uri("shards"), seed=2, layout="shards", shard_size=2)
    assert "testing" not in str(summary.out) and str(summary.out) == f"s3://{BUCKET}/shards"
    complete = objects(fs, "shards")
    assert {"dataset.json", "manifest.parquet", "shards/000002.tar", "meta/shard-000002.json"} <= set(complete)

    rows = read_manifest(uri("shards")).to_pylist()
    remote = manifest_dataset(uri("shards"), "train", rows_per_task=2).take_all()
    assert [r["index"] for r in remote] == [r["index"] for r in rows if r["split"] == "train"]
    for row in remote:
        assert np.array_equal(row["image"], render_crystal(small_config(), 2, row["index"]).image)
    assert main(["data", "info", uri("shards")]) == 0
    out = capsys.readouterr().out
    assert f"dataset: s3://{BUCKET}/shards\n" in out and "layout: shards (3 of up to 2 samples)" in out

    # What an interrupted run leaves: a shard lost, no manifest, dataset.json still incomplete.
    fs.delete_file(f"{BUCKET}/shards/shards/000001.tar")
    fs.delete_file(f"{BUCKET}/shards/manifest.parquet")
    info = read_info(uri("shards"))
    with fs.open_output_stream(f"{BUCKET}/shards/dataset.json") as fh:
        fh.write(json.dumps({**info, "status": "incomplete"}).encode())
    again = generate_dataset(small_config(), 5, uri("shards"), seed=2, layout="shards", shard_size=2)
    assert (again.rendered, again.reused) == (2, 3)
    assert objects(fs, "shards") == complete


@pytest.mark.slow
def test_files_layout_on_s3_reads_back(ray_local, s3):
    uri, fs = s3
    generate_dataset(small_config(), 3, uri("files"), seed=1, workers=1)
    names = set(objects(fs, "files"))
    assert {"dataset.json", "manifest.parquet", "classes.txt", "train.txt", "images/0000000.png",
            "meta/0000002.json"} <= names
    rows = read_manifest(uri("files")).to_pylist()
    assert [r["index"] for r in rows] == [0, 1, 2]
    split = rows[0]["split"]
    decoded = manifest_dataset(uri("files"), split, columns=["image", "index"]).take_all()
    assert decoded[0]["index"] == 0 and decoded[0]["image"].shape == (64, 96)


@pytest.mark.slow
def test_a_killed_run_on_s3_resumes(s3, tmp_path):
    """Ctrl-C a real CLI run writing shards to S3 part-way; the same command then completes it."""
    uri, fs = s3
    config = tmp_path / "config.json"
    config.write_text(json.dumps(small_config(width=384, height=288, n_rods_rng_lo_hi=[30, 60]).to_json_dict()))
    n = 200
    cmd = [sys.executable, "-m", "microforge", "synth", "crystals", "--preset", str(config), "--n", str(n),
           "--out", uri("killed"), "--layout", "shards", "--shard-size", "4", "--workers", "1"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len([k for k in objects(fs, "killed") if k.startswith("meta/")]) < 2:
            time.sleep(0.5)
    finally:  # the run never outlives the test
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode in (2, 130), output
    done = [k for k in objects(fs, "killed") if k.startswith("meta/")]
    assert 2 <= len(done) < n // 4
    assert "manifest.parquet" not in objects(fs, "killed")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout and read_manifest(uri("killed")).num_rows == n
    reused = int(result.stdout.split(" rendered, ")[1].split(" already")[0])
    assert reused == 4 * len(done)  # every shard committed before the interrupt was kept
