"""Integration tests on a real Slurm cluster (marker ``slurm``; deselected by default).

Bring one up with the two-node test cluster of the repository and run:

    eval "$(.ci/slurm-up.sh)"
    pytest -m slurm tests/cluster
    .ci/slurm-down.sh

Every test checks that no process of its job's Ray survives: each Ray process carries
``MF_RAY_NODE=<job>-<node index>`` in its environment (set by the job script), so the check
finds even workers that renamed themselves (``ray::IDLE``) and never touches another session's Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from microforge.cluster import job_state
from microforge.platform.cli import main

pytestmark = pytest.mark.slurm

HERE = Path(__file__).parent
PROBE = str(HERE / "ray_probe.py")
FAKE_SERVE = str(HERE / "fake_serve.py")
RAY_TMP_ROOT = "/tmp"  # the jobs' default --ray-tmp


@pytest.fixture(scope="module")
def slurm_nodes() -> list[str]:
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not on PATH: install slurm-client and start a test cluster with .ci/slurm-up.sh")
    conf = os.environ.get("SLURM_CONF")
    if not conf or not Path(conf).is_file():
        pytest.skip('SLURM_CONF is not set to a slurm.conf: run `eval "$(.ci/slurm-up.sh)"` first')
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"Slurm does not answer (SLURM_CONF={conf}): {out.stderr}"
    nodes = sorted({line.split()[0] for line in out.stdout.splitlines() if line.split()[1] in ("idle", "mix")})
    assert len(nodes) >= 2, f"the slurm tests need two idle nodes, sinfo says: {out.stdout}"
    return nodes


@pytest.fixture()
def workdir(monkeypatch, slurm_nodes, request):
    """A fresh directory the "nodes" share (/tmp here), the jobs' working directory and state dir.

    Not pytest's tmp_path: concurrent pytest sessions of the same user prune each other's
    older base temp dirs, which would delete a job's directory while it runs.
    """
    path = Path(tempfile.mkdtemp(prefix="mf-slurm-test-"))
    monkeypatch.setenv("MICROFORGE_HOME", str(path / "home"))
    monkeypatch.chdir(path)
    yield path
    # A failed test may leave its job running: cancel it; keep the directory for a post-mortem.
    if SUBMITTED:
        subprocess.run(["scancel", *SUBMITTED], capture_output=True)
        for job_id in SUBMITTED:
            wait_finished(job_id, timeout=120)
        SUBMITTED.clear()
    if getattr(request.node, "call_failed", False):
        print(f"kept {path} for inspection")
    else:
        shutil.rmtree(path, ignore_errors=True)


SUBMITTED: list[str] = []


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["cluster", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def submit(capsys, *argv: str) -> str:
    code, out, err = cli(capsys, "submit", *argv)
    assert code == 0, err
    match = re.search(r"submitted job (\d+)", out)
    assert match, out
    SUBMITTED.append(match.group(1))
    return match.group(1)


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0, job_id: str | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + job_context(job_id))
        time.sleep(interval)


def job_context(job_id: str | None) -> str:
    """The job's state and the end of its log, for failure messages."""
    if job_id is None:
        return ""
    from microforge.cluster.jobs import log_path

    try:
        tail = "".join(log_path(job_id).read_text(errors="replace").splitlines(keepends=True)[-40:])
    except Exception as exc:
        tail = f"(no log: {exc})"
    return f"\njob {job_id}: {job_state(job_id)}\n{tail}"


def wait_finished(job_id: str, timeout: float = 300):
    def finished():
        state = job_state(job_id)
        return state if state is not None and not state.active else None

    return wait_until(finished, timeout, f"job {job_id} to finish", interval=2, job_id=job_id)


def leftovers(job_id: str) -> list[str]:
    """Processes of this job's Ray still alive (by the marker in their environment)."""
    found = []
    marker = f"MF_RAY_NODE={job_id}-".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(entry.startswith(marker) for entry in environ.split(b"\0")):
            found.append(f"{proc.name} {cmdline[:100]}")
    return found


def ray_temp_dirs(job_id: str) -> list[Path]:
    return sorted(Path(RAY_TMP_ROOT).glob(f"mfr-{job_id}-*"))


def assert_nothing_left(job_id: str, timeout: float = 30) -> None:
    # The job's end is recorded as the last step exits; give the sweep a moment to finish.
    try:
        wait_until(lambda: not leftovers(job_id) and not ray_temp_dirs(job_id), timeout, "cleanup")
    except AssertionError:
        pytest.fail(f"job {job_id} left Ray behind: processes {leftovers(job_id)}, dirs {ray_temp_dirs(job_id)}")


def two_node_synth(workdir, capsys, out_dir: Path, *synth_options: str) -> str:
    """Run ``microforge synth crystals`` (16 samples, 4 workers) as a 2-node job under the Ray
    probe; check that both nodes joined one Ray cluster and both rendered. Returns the job id."""
    report = workdir / "report.json"
    started = time.monotonic()
    job_id = submit(
        capsys, "--nodes", "2", "--cpus-per-task", "1", "--time", "10", "--job-dir", str(workdir / "job"),
        "--", sys.executable, PROBE, str(report),
        "--", sys.executable, "-m", "microforge", "synth", "crystals", "--preset", "default", "--n", "16",
        "--out", str(out_dir), "--seed", "3", "--workers", "4", *synth_options,
    )
    state = wait_finished(job_id)
    log = (workdir / "job" / f"slurm-{job_id}.out").read_text()
    assert state.state == "COMPLETED", f"job ended {state}:\n{log[-4000:]}"
    print(f"2-node dataset job took {time.monotonic() - started:.0f}s")

    # Both Slurm nodes joined one Ray cluster, as distinct Ray nodes, and both ran tasks.
    result = json.loads(report.read_text())
    alive = result["alive_nodes"]
    assert len(alive) == 2 and len({n["id"] for n in alive}) == 2 and len({n["ip"] for n in alive}) == 2
    assert result["task_nodes"] == sorted(n["id"] for n in alive)
    assert result["command_exit"] == 0
    assert set(result["render_task_nodes"]) == {n["id"] for n in alive}, (
        f"rendering did not span both nodes: {result['render_tasks']} {result.get('render_task_nodes_error', '')}"
    )
    assert result["ray_auth_mode"] == "disabled"
    assert "Ray cluster is up: 2 node(s)" in log
    for node in ("node1", "node2"):
        assert (workdir / "job" / f"ray-{job_id}-{node}.log").is_file()
    return job_id


def test_two_node_job_generates_a_crystal_dataset(workdir, capsys):
    out_dir = workdir / "crystals"
    job_id = two_node_synth(workdir, capsys, out_dir)

    # The dataset itself.
    import pyarrow.parquet as pq

    assert pq.read_table(out_dir / "manifest.parquet").num_rows == 16
    assert json.loads((out_dir / "dataset.json").read_text())
    assert len(list((out_dir / "images").rglob("*.png"))) == 16

    code, out, _ = cli(capsys, "status", job_id)
    assert code == 0 and f"job {job_id}: COMPLETED" in out
    code, out, _ = cli(capsys, "logs", job_id)
    assert code == 0 and "teardown complete" in out
    assert_nothing_left(job_id)


def test_two_node_job_writes_shards_from_both_nodes(workdir, capsys, tmp_path):
    """Shards written by render tasks on both nodes are the bytes a 1-worker local run writes."""
    from microforge.datasets.manifest import read_manifest

    out_dir = workdir / "shards"
    job_id = two_node_synth(workdir, capsys, out_dir, "--layout", "shards", "--shard-size", "4")
    assert sorted(p.name for p in (out_dir / "shards").iterdir()) == [f"00000{i}.tar" for i in range(4)]
    rows = read_manifest(out_dir).to_pylist()
    assert [r["index"] for r in rows] == list(range(16))
    local = tmp_path / "local"
    assert main(["synth", "crystals", "--preset", "default", "--n", "16", "--out", str(local), "--seed", "3",
                 "--workers", "1", "--layout", "shards", "--shard-size", "4"]) == 0
    for i in range(4):
        name = f"shards/00000{i}.tar"
        assert (out_dir / name).read_bytes() == (local / name).read_bytes(), name
    assert_nothing_left(job_id)


def test_two_jobs_share_the_nodes_without_clashing(workdir, capsys):
    reports = [workdir / "a.json", workdir / "b.json"]
    job_ids = [
        submit(capsys, "--nodes", "2", "--cpus-per-task", "1", "--time", "10", "--", sys.executable, PROBE, str(r))
        for r in reports
    ]
    states = [wait_finished(j) for j in job_ids]
    assert [s.state for s in states] == ["COMPLETED", "COMPLETED"], states
    clusters = [json.loads(r.read_text()) for r in reports]
    ids = [{n["id"] for n in c["alive_nodes"]} for c in clusters]
    assert len(ids[0]) == 2 and len(ids[1]) == 2 and not ids[0] & ids[1], "the two jobs' Ray clusters mixed"
    for job_id in job_ids:
        assert_nothing_left(job_id)


def test_scancel_tears_down_ray_with_token_auth(workdir, capsys):
    report = workdir / "report.json"
    job_dir = workdir / "job"
    job_id = submit(capsys, "--nodes", "2", "--cpus-per-task", "1", "--time", "10", "--ray-auth", "token",
                    "--job-dir", str(job_dir), "--", sys.executable, PROBE, str(report), "--hold")
    wait_until(report.exists, 300, "the Ray cluster and its actors", interval=2, job_id=job_id)
    result = json.loads(report.read_text())
    assert result["ray_auth_mode"] == "token"
    assert result["token_path"] == str(job_dir / f"ray_auth_token.{job_id}")
    assert result["token_mode"] == "0o600"
    assert len(result["holder_nodes"]) == 2
    assert leftovers(job_id), "the marker check found no Ray process of a running job"

    code, out, _ = cli(capsys, "cancel", job_id)
    assert code == 0 and f"cancelled job {job_id}" in out
    state = wait_finished(job_id, timeout=120)
    assert state.state == "CANCELLED"
    assert_nothing_left(job_id)
    assert not (job_dir / f"ray_auth_token.{job_id}").exists()


def test_time_limit_leaves_nothing_behind(workdir, capsys):
    report = workdir / "report.json"
    # Two minutes (Slurm's unit), so that even on a loaded machine the limit hits a running
    # cluster; Slurm checks limits every ~30 s, then SIGTERM, then SIGKILL after KillWait.
    job_id = submit(capsys, "--nodes", "2", "--cpus-per-task", "1", "--time", "2",
                    "--", sys.executable, PROBE, str(report), "--hold")
    state = wait_finished(job_id, timeout=400)
    assert state.state == "TIMEOUT"
    assert report.exists(), "the Ray cluster never came up within the 2-minute limit" + job_context(job_id)
    assert_nothing_left(job_id)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_interactive_serves_and_prints_port_forwards(workdir, slurm_nodes):
    log_path = workdir / "interactive.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["salloc", "--nodes=2", "--cpus-per-task=1", "--time=5", sys.executable, "-m", "microforge",
             "cluster", "interactive", "--serve-command", f"{sys.executable} {FAKE_SERVE}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(lambda: "fake serve listening" in log_path.read_text() or proc.poll() is not None, 300,
                   "the serve command to listen")
        text = log_path.read_text()
        job_id = re.search(r"Granted job allocation (\d+)", text).group(1)
        serve = re.search(r"ssh -N -L 8000:127\.0\.0\.1:(\d+) -J (\S+)@(\S+) \2@(\S+)", text)
        dashboard = re.search(r"ssh -N -L 8265:127\.0\.0\.1:(\d+) -J \S+ \S+@(\S+)", text)
        assert serve and dashboard, text
        assert serve.group(4) == dashboard.group(2) == slurm_nodes[0]  # both on the head node
        assert serve.group(3) == socket.gethostname()  # $SLURM_SUBMIT_HOST: where salloc ran
        # The forwarded ports answer on the head node (which is this host here).
        status, body = _get(f"http://127.0.0.1:{serve.group(1)}/")
        assert status == 200 and body.startswith(f"fake serve on {slurm_nodes[0]}")
        status, _ = wait_until(lambda: _try_get(f"http://127.0.0.1:{dashboard.group(1)}/"), 60, "the dashboard")
        assert status == 200
        assert leftovers(job_id)
    finally:
        # Ctrl-C: SIGINT to the foreground process group.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    text = log_path.read_text()
    assert "teardown complete" in text, text[-3000:]
    assert_nothing_left(job_id)


def _try_get(url: str):
    try:
        return _get(url)
    except OSError:
        return None


def test_bad_requests_are_refused_with_a_clear_message(workdir, capsys, monkeypatch):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    cases = [
        (["--partition", "nosuch"], "unknown partition 'nosuch'"),
        (["--nodes", "3"], "--nodes 3: partition 'debug' has only 2 node(s)"),
        (["--mem", "100G"], "free to give"),
        (["--time", "2:00:00"], "over the time limit of partition 'debug'"),
        (["--env", str(workdir / "no-venv")], "does not exist"),
    ]
    for options, message in cases:
        code, _, err = cli(capsys, "submit", *options, "--", "true")
        assert code == 2 and message in err, (options, err)
    # Where microforge does not check, Slurm's own message reaches the user. (Not every
    # impossible request is refused by sbatch: with Slurm's default EnforcePartLimits=NO, 3 nodes
    # in a 2-node partition would pend forever, which is why microforge checks first.)
    monkeypatch.setattr("microforge.cluster.slurm.check_resources", lambda spec: None)
    try:
        code, _, err = cli(capsys, "submit", "--mem", "100G", "--job-dir", str(workdir / "rejected"), "--", "true")
        assert code == 2, err
        assert "sbatch rejected the job: sbatch: error: Memory specification can not be satisfied" in err
        assert not (workdir / "rejected").exists()
    finally:
        after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        submitted = set(after) - set(before)
        if submitted:
            subprocess.run(["scancel", *submitted])
    assert not submitted, "a bad request was submitted"
