"""CLI tests without a Slurm cluster: fake sbatch/squeue/scontrol/scancel on PATH."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from microforge.platform.cli import main

# A two-node partition `debug` (2 CPUs, 2000 MB each, no GPUs, 30 min) and a GPU partition `gpu`.
FAKE_SCONTROL = r"""#!/bin/bash
case "$1 $2" in
"show partition") cat <<'EOF'
PartitionName=debug AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxTime=00:30:00 Nodes=node[1-2] State=UP TotalCPUs=4 TotalNodes=2
PartitionName=gpu Default=NO MaxNodes=1 MaxTime=UNLIMITED Nodes=g1 State=UP TotalNodes=1
EOF
;;
"show node") cat <<'EOF'
NodeName=node1 Arch=x86_64 CPUTot=2 Gres=(null) NodeAddr=127.0.0.1 RealMemory=2000 State=IDLE
NodeName=node2 Arch=x86_64 CPUTot=2 Gres=(null) NodeAddr=127.0.0.2 RealMemory=2000 State=IDLE
NodeName=g1 Arch=x86_64 CPUTot=64 Gres=gpu:a100:4(S:0-1) RealMemory=512000 State=IDLE
EOF
;;
"show hostnames") case "$3" in "node[1-2]") printf 'node1\nnode2\n';; *) echo "$3";; esac ;;
"show job") if [[ -f $FAKE_SLURM_DIR/job-$3 ]]; then cat "$FAKE_SLURM_DIR/job-$3"; else
    echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; fi ;;
esac
"""
FAKE_SBATCH = r"""#!/bin/bash
printf '%s\n' "$@" >"$FAKE_SLURM_DIR/sbatch-args"
if [[ -n ${FAKE_SBATCH_ERROR:-} ]]; then echo "$FAKE_SBATCH_ERROR" >&2; exit 1; fi
echo "4242;cluster"
"""
FAKE_SQUEUE = r"""#!/bin/bash
[[ -f $FAKE_SLURM_DIR/squeue ]] && cat "$FAKE_SLURM_DIR/squeue"
exit 0
"""
FAKE_SCANCEL = r"""#!/bin/bash
echo "$@" >>"$FAKE_SLURM_DIR/scancel-args"
"""


@pytest.fixture()
def fake_slurm(tmp_path, monkeypatch, state_home):
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name, text in [("scontrol", FAKE_SCONTROL), ("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE),
                       ("scancel", FAKE_SCANCEL)]:
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path))
    monkeypatch.delenv("FAKE_SBATCH_ERROR", raising=False)
    return tmp_path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["cluster", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_submit_writes_job_dir_and_prints_how_to_follow(fake_slurm, state_home, capsys):
    code, out, err = run_cli(capsys, "submit", "--nodes", "2", "--time", "10", "--", "microforge", "synth",
                             "crystals", "--n", "8")
    assert code == 0, err
    assert "submitted job 4242 (2 node(s))" in out
    assert "microforge cluster logs 4242 --follow" in out and "squeue -j 4242" in out
    args = (fake_slurm / "sbatch-args").read_text().split()
    assert args[0] == "--parsable"
    script = Path(args[1])
    assert script.stat().st_mode & stat.S_IXUSR
    job_dir = script.parent
    assert job_dir.parent == state_home / "cluster" / "jobs"
    record = json.loads((job_dir / "job.json").read_text())
    assert record["job_id"] == "4242" and record["log"] == str(job_dir / "slurm-4242.out")
    assert record["command"] == ["microforge", "synth", "crystals", "--n", "8"]
    assert "MF_COMMAND=(microforge synth crystals --n 8)" in script.read_text()

    # logs: the job's log found through the index
    (job_dir / "slurm-4242.out").write_text("hello from the job\n")
    code, out, _ = run_cli(capsys, "logs", "4242")
    assert code == 0 and out == "hello from the job\n"
    # status: squeue first
    (fake_slurm / "squeue").write_text("4242|RUNNING|0:05|10:00|2|node[1-2]|None\n")
    code, out, _ = run_cli(capsys, "status", "4242")
    assert code == 0 and out.startswith("job 4242: RUNNING") and "NodeList=node[1-2]" in out
    assert f"log: {job_dir}/slurm-4242.out" in out
    # ... then scontrol for jobs squeue no longer lists
    (fake_slurm / "squeue").unlink()
    (fake_slurm / "job-4242").write_text("JobId=4242 JobName=microforge JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15\n")
    code, out, _ = run_cli(capsys, "status", "4242")
    assert out.startswith("job 4242: TIMEOUT") and "ExitCode=0:15" in out


def test_dry_run_prints_the_script_and_submits_nothing(fake_slurm, state_home, capsys):
    code, out, _ = run_cli(capsys, "submit", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu",
                           "--dry-run", "--", "python", "train.py")
    assert code == 0
    assert "#SBATCH --gpus-per-node=4\n" in out and "#SBATCH --partition=gpu\n" in out
    assert "MF_COMMAND=(python train.py)" in out
    assert not (fake_slurm / "sbatch-args").exists()
    assert not (state_home / "cluster").exists()
    code, out, _ = run_cli(capsys, "submit", "--gpus-per-node", "2", "--gpu-request", "gres", "--dry-run",
                           "--", "true")
    assert "#SBATCH --gres=gpu:2\n" in out and "--gpus-per-node" not in out.split("# ---- settings")[0]


def test_missing_sbatch_is_a_clear_error(tmp_path, monkeypatch, state_home, capsys):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, _, err = run_cli(capsys, "submit", "--", "true")
    assert code == 2
    assert "microforge: error: 'sbatch' is not on PATH" in err
    assert not (state_home / "cluster").exists()


@pytest.mark.parametrize(
    "options, message",
    [(["--partition", "debgu"], "unknown partition 'debgu' (did you mean 'debug'?); this cluster has: debug, gpu"),
     (["--nodes", "3"], "--nodes 3: partition 'debug' has only 2 node(s)"),
     (["--partition", "gpu", "--nodes", "2"], "--nodes 2: partition 'gpu' has only 1 node(s)"),
     (["--time", "1:00:00"], "--time 1:00:00: over the time limit of partition 'debug' (30 min)"),
     (["--mem", "4G"], "partition 'debug' has 0 node(s) with 1 CPU(s), 4G free to give, 1 asked for"),
     (["--cpus-per-task", "4"], "has 0 node(s) with 4 CPU(s)"),
     (["--gpus-per-node", "1"], "has 0 node(s) with 1 CPU(s), 1 GPU(s)"),
     (["--partition", "gpu", "--gpus-per-node", "8"], "partition 'gpu' has 0 node(s) with 1 CPU(s), 8 GPU(s)")],
)
def test_impossible_requests_are_refused_before_submission(fake_slurm, capsys, options, message):
    code, _, err = run_cli(capsys, "submit", *options, "--", "true")
    assert code == 2
    assert message in err
    assert not (fake_slurm / "sbatch-args").exists()


def test_gpu_partition_request_that_fits(fake_slurm, capsys):
    code, _, err = run_cli(capsys, "submit", "--partition", "gpu", "--gpus-per-node", "4", "--cpus-per-task",
                           "32", "--mem", "100G", "--", "true")
    assert code == 0, err


def test_sbatch_message_is_passed_through_and_nothing_is_left(fake_slurm, state_home, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_ERROR", "sbatch: error: Batch job submission failed: Invalid account")
    job_dir = state_home / "myjob"
    code, _, err = run_cli(capsys, "submit", "--account", "nope", "--job-dir", str(job_dir), "--", "true")
    assert code == 2
    assert "sbatch rejected the job: sbatch: error: Batch job submission failed: Invalid account" in err
    assert not job_dir.exists()


def test_missing_environment_is_refused_before_submission(fake_slurm, tmp_path, capsys):
    code, _, err = run_cli(capsys, "submit", "--env", str(tmp_path / "no-such-venv"), "--", "true")
    assert code == 2 and "--env: environment" in err and "does not exist" in err
    assert not (fake_slurm / "sbatch-args").exists()


def test_injection_in_options_is_refused(fake_slurm, capsys):
    for option in ("--partition", "--account", "--qos", "--job-name", "--time", "--mem"):
        code, _, err = run_cli(capsys, "submit", option, "x'; touch /tmp/pwned #", "--", "true")
        assert code == 2 and f"{option}: " in err, (option, err)
    assert not (fake_slurm / "sbatch-args").exists()


def test_no_command_is_an_error(fake_slurm, capsys):
    code, _, err = run_cli(capsys, "submit", "--nodes", "1")
    assert code == 2 and "no command given" in err


@pytest.mark.parametrize("command", [["status", "12;rm -rf /"], ["cancel", "abc"], ["logs", "1 2"]])
def test_job_ids_are_validated(fake_slurm, capsys, command):
    code, _, err = run_cli(capsys, *command)
    assert code == 2 and "is not a Slurm job id" in err


def test_cancel_calls_scancel(fake_slurm, capsys):
    code, out, _ = run_cli(capsys, "cancel", "77")
    assert code == 0 and "cancelled job 77" in out
    assert (fake_slurm / "scancel-args").read_text().strip() == "77"


def test_unknown_job(fake_slurm, capsys):
    code, _, err = run_cli(capsys, "status", "999")
    assert code == 2 and "job 999: unknown to squeue and scontrol" in err
    code, _, err = run_cli(capsys, "logs", "999")
    assert code == 2 and "job 999: no log known" in err


def test_interactive_outside_an_allocation(fake_slurm, capsys, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    code, _, err = run_cli(capsys, "interactive")
    assert code == 2
    assert "not inside a Slurm allocation" in err and "salloc" in err


def test_interactive_dry_run(fake_slurm, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "55")
    code, out, _ = run_cli(capsys, "interactive", "--serve-command", "microforge serve up --config s.yaml",
                           "--bind", "all", "--login-host", "login1.example.org", "--dry-run")
    assert code == 0
    assert "\n#SBATCH" not in out  # the allocation's resources, not a batch header
    assert "MF_MODE=interactive" in out and "MF_BIND=all" in out and "MF_LOGIN_HOST=login1.example.org" in out
    assert ("MF_COMMAND=(bash -c 'exec \"$@\" --host \"$MF_SERVE_HOST\" --port \"$MF_SERVE_PORT\"' mf-serve "
            "microforge serve up --config s.yaml)") in out
