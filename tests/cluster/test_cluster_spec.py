"""Unit tests (no Slurm needed): job validation, script rendering, quoting and GPU options."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from microforge.cluster import ClusterError, JobSpec, build_spec, render_job_script, sbatch_options
from microforge.cluster.script import settings_block
from microforge.cluster.spec import mem_to_mb, time_to_seconds

JOB_DIR = "/shared/jobs/j1"
MALICIOUS = "'; touch /tmp/pwned #"


def sbatch_lines(script: str) -> list[str]:
    return [line[len("#SBATCH ") :] for line in script.splitlines() if line.startswith("#SBATCH ")]


@pytest.mark.parametrize(
    "text, seconds",
    [("30", 1800), ("5:30", 330), ("2:00:00", 7200), ("1-0", 86400), ("1-2:30", 95400),
     ("1-02:30:15", 95415), ("UNLIMITED", None), ("infinite", None)],
)
def test_time_formats_slurm_accepts(text, seconds):
    assert time_to_seconds(text) == seconds


@pytest.mark.parametrize("text", ["1h", "2:00:00:00", "-5", "1:2:3:4", "1 hour", "", "5;ls"])
def test_time_formats_rejected(text):
    with pytest.raises(ClusterError, match="--time: .* is not a Slurm time limit"):
        build_spec({"time": text})


def test_zero_time_rejected():
    with pytest.raises(ClusterError, match="--time"):
        build_spec({"time": "0"})


@pytest.mark.parametrize("text, mb", [("16G", 16384), ("512M", 512), ("4096", 4096), ("1t", 1048576), ("0", 0)])
def test_memory_sizes(text, mb):
    assert mem_to_mb(text) == mb
    assert build_spec({"mem": text}).mem == text.upper()


@pytest.mark.parametrize("text", ["16GB", "1.5G", "G", "-1G", "16 G", "16G\n#SBATCH --x"])
def test_memory_rejected(text):
    with pytest.raises(ClusterError, match="--mem: .* is not a Slurm memory size"):
        build_spec({"mem": text})


@pytest.mark.parametrize(
    "values, option",
    [({"nodes": 0}, "--nodes"), ({"cpus_per_task": 0}, "--cpus-per-task"),
     ({"gpus_per_node": -1}, "--gpus-per-node"), ({"port_base": 80}, "--port-base"),
     ({"ready_timeout": 1}, "--ready-timeout"), ({"gpu_request": "cuda"}, "--gpu-request"),
     ({"ray_auth": "password"}, "--ray-auth"), ({"bind": "world"}, "--bind")],
)
def test_out_of_range_values_name_the_option(values, option):
    with pytest.raises(ClusterError, match=f"^{option}: "):
        build_spec(values)


@pytest.mark.parametrize("field", ["partition", "account", "qos", "job_name"])
@pytest.mark.parametrize("value", [MALICIOUS, "a b", "gpu\n#SBATCH --wrap=x", "x$(id)", ""])
def test_names_reject_shell_and_sbatch_syntax(field, value):
    with pytest.raises(ClusterError, match=f"--{field.replace('_', '-')}: "):
        build_spec({field: value})


def test_partition_list_allowed():
    assert build_spec({"partition": "gpu,gpu-long"}).partition == "gpu,gpu-long"


def test_unknown_profile_key_is_named(tmp_path):
    profile = tmp_path / "cluster.yaml"
    profile.write_text("partition: gpu\npartiton_x: 1\n")
    with pytest.raises(ClusterError, match="unknown key 'partiton_x'"):
        build_spec({}, profile=profile)


def test_profile_values_are_overridden_by_options(tmp_path):
    profile = tmp_path / "cluster.yaml"
    profile.write_text("partition: gpu\nmodules: [cuda/12]\nnodes: 4\n")
    spec = build_spec({"nodes": 2, "partition": None}, profile=profile)
    assert (spec.partition, spec.modules, spec.nodes) == ("gpu", ["cuda/12"], 2)


def test_environment_path_must_exist(tmp_path):
    with pytest.raises(ClusterError, match="--env: environment .* does not exist"):
        build_spec({"env": str(tmp_path / "missing-venv")})
    (tmp_path / "plain").mkdir()
    with pytest.raises(ClusterError, match="neither a venv .* nor a conda env"):
        build_spec({"env": str(tmp_path / "plain")})


def test_venv_and_conda_activation(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    conda = tmp_path / "conda-env"
    (conda / "conda-meta").mkdir(parents=True)
    script = render_job_script(build_spec({"env": str(venv), "modules": ["cuda/12.1"]}), JOB_DIR, ["true"])
    assert f"source {venv}/bin/activate || exit 1" in script
    assert "module load cuda/12.1 || exit 1" in script
    assert script.index("module load") < script.index("source ")
    script = render_job_script(build_spec({"env": str(conda)}), JOB_DIR, ["true"])
    assert 'eval "$(conda shell.bash hook)"' in script
    assert f"conda activate {conda} || exit 1" in script


def test_ray_tmp_root_fits_unix_socket_limit():
    assert build_spec({"ray_tmp": "/scratch/"}).ray_tmp == "/scratch"
    with pytest.raises(ClusterError, match="107-byte"):
        build_spec({"ray_tmp": "/very/long/node/local/scratch/dir"})
    with pytest.raises(ClusterError, match="--ray-tmp"):
        build_spec({"ray_tmp": "relative/tmp"})


def test_worker_ports_must_not_overlap_job_ports():
    assert build_spec({"worker_ports": "40000-40999"}).worker_ports == "40000-40999"
    with pytest.raises(ClusterError, match="--worker-ports"):
        build_spec({"worker_ports": "40999-40000"})
    with pytest.raises(ClusterError, match="overlap"):
        build_spec({"worker_ports": "25000-26000"})


def test_setup_lines_are_single_lines():
    with pytest.raises(ClusterError, match="--setup: a setup line must be one line"):
        build_spec({"setup": ["module load a\nmodule load b"]})


def test_sbatch_header():
    spec = build_spec({"nodes": 2, "cpus_per_task": 8, "mem": "16g", "time": "2:00:00",
                       "partition": "debug", "account": "proj-1", "qos": "normal"})
    lines = sbatch_lines(render_job_script(spec, JOB_DIR, ["true"]))
    assert lines == [
        "--job-name=microforge", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=8", "--mem=16G",
        "--time=2:00:00", "--partition=debug", "--account=proj-1", "--qos=normal",
        f"--output={JOB_DIR}/slurm-%j.out", "--signal=B:TERM@60",
    ]


def test_short_jobs_get_no_early_signal():
    # Slurm may send --signal up to a minute early: a 1-minute job would be stopped at once.
    assert not any(o.startswith("--signal") for o in sbatch_options(build_spec({"time": "1"}), JOB_DIR))
    assert "--signal=B:TERM@60" in sbatch_options(build_spec({}), JOB_DIR)


def test_dry_run_gpu_options_are_what_slurm_expects():
    default = sbatch_options(build_spec({"nodes": 2, "gpus_per_node": 4}), JOB_DIR)
    assert "--gpus-per-node=4" in default and not any(o.startswith("--gres") for o in default)
    gres = sbatch_options(build_spec({"gpus_per_node": 2, "gpu_request": "gres"}), JOB_DIR)
    assert "--gres=gpu:2" in gres and not any(o.startswith("--gpus") for o in gres)
    assert not any("gpu" in o for o in sbatch_options(build_spec({}), JOB_DIR))
    script = render_job_script(build_spec({"gpus_per_node": 4}), JOB_DIR, ["true"])
    assert "MF_GPUS_PER_NODE=4" in script
    assert '--num-gpus="$MF_GPUS_PER_NODE"' in script


def test_rendered_script_is_valid_bash():
    script = render_job_script(build_spec({"nodes": 3, "ray_auth": "token"}), JOB_DIR, ["echo", "hi"])
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "@@" not in script
    assert script.startswith("#!/bin/bash\n")


def test_empty_command_is_an_error():
    with pytest.raises(ClusterError, match="no command given"):
        render_job_script(build_spec({}), JOB_DIR, [])


def _bash_words(assignments: str) -> list[str]:
    """Evaluate the settings block in bash and return MF_COMMAND's words, NUL-separated."""
    out = subprocess.run(["bash", "-c", assignments + '\nprintf "%s\\0" "${MF_COMMAND[@]}"'],
                         capture_output=True, check=True)
    return out.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize(
    "command",
    [["microforge", "synth", "crystals", "--out", MALICIOUS],
     ["python", "-c", 'import os; print("$HOME", `id`)'],
     ["echo", "$(touch /tmp/pwned)", "a\nb", "@@ENVIRONMENT@@", "*", "~", "\\", "'\"'"]],
)
def test_command_words_survive_quoting_without_injection(command, tmp_path):
    pwned = Path("/tmp/pwned")
    existed = pwned.exists()
    words = _bash_words(settings_block(build_spec({}), JOB_DIR, command, "submit"))
    assert words == command
    assert pwned.exists() == existed


def test_malicious_paths_never_reach_the_script_unquoted(tmp_path, monkeypatch):
    # A job dir with shell syntax is refused (it goes on an #SBATCH line) ...
    from microforge.cluster.jobs import resolve_job_dir

    with pytest.raises(ClusterError, match="--job-dir"):
        resolve_job_dir(str(tmp_path / "x'; touch pwned #"), build_spec({}))
    # ... and a venv whose path is shell syntax is activated by its literal path.
    venv = tmp_path / "env'; touch pwned; echo '"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("ACTIVATED=yes\n")
    script = render_job_script(build_spec({"env": str(venv)}), JOB_DIR, ["true"])
    block = script.split("# ---- environment")[1].split("# ---- launcher")[0]
    monkeypatch.chdir(tmp_path)
    out = subprocess.run(["bash", "-c", block.split("\n", 1)[1] + "\necho $ACTIVATED"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "yes"
    assert not (tmp_path / "pwned").exists()


def test_one_pass_substitution_keeps_markers_in_user_text():
    script = render_job_script(build_spec({}), JOB_DIR, ["echo", "@@SBATCH@@"])
    assert "MF_COMMAND=(echo @@SBATCH@@)" in script
    assert len(re.findall(r"^#SBATCH --nodes", script, flags=re.M)) == 1


def test_ports_are_derived_from_the_job_id():
    script = render_job_script(build_spec({"port_base": 30000}), JOB_DIR, ["true"])
    assert "MF_PORT_BASE=30000" in script
    assert "port_block=$((MF_PORT_BASE + (SLURM_JOB_ID % 100) * 100))" in script


def test_environment_is_never_read_from_hard_coded_paths():
    script = render_job_script(build_spec({}), JOB_DIR, ["true"])
    env_block = script.split("# ---- environment")[1].split("# ---- launcher")[0]
    assert env_block.strip().endswith("# (none)")
    assert "/home/" not in script and "conda activate" not in script


def test_spec_is_a_config_model():
    assert JobSpec().nodes == 1
    assert os.fspath(JOB_DIR) in render_job_script(JobSpec(), JOB_DIR, ["true"])
