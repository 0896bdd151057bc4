"""``microforge cluster``: run microforge commands on a Ray cluster inside a Slurm allocation."""

from __future__ import annotations

import argparse
import os
import shlex


def register(groups) -> None:
    parser = groups.add_parser(
        "cluster",
        help="run commands on a Ray cluster inside Slurm jobs",
        description="Launch a Ray cluster inside a Slurm allocation (batch or interactive) "
        "and run any command against it.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    submit = commands.add_parser(
        "submit",
        help="submit a batch job: a Ray cluster on N nodes running COMMAND",
        description="Render a Ray-on-Slurm job script and submit it with sbatch. "
        "Example: microforge cluster submit --nodes 2 --gpus-per-node 4 --time 4:00:00 -- "
        "microforge train unet ...",
    )
    _add_resource_options(submit)
    _add_ray_options(submit)
    submit.add_argument("--job-dir", help="directory for the script and logs (default: under the state dir)")
    submit.add_argument("--dry-run", action="store_true", help="print the job script; submit nothing")
    submit.add_argument("job_command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                        help="the command to run against the Ray cluster")
    submit.set_defaults(func=_submit)

    status = commands.add_parser("status", help="state of a job (squeue, else scontrol/sacct)")
    status.add_argument("job_id", metavar="JOB")
    status.set_defaults(func=_status)

    cancel = commands.add_parser("cancel", help="cancel a job (scancel); its Ray cluster is torn down")
    cancel.add_argument("job_id", metavar="JOB")
    cancel.set_defaults(func=_cancel)

    logs = commands.add_parser("logs", help="print a job's log")
    logs.add_argument("job_id", metavar="JOB")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    logs.set_defaults(func=_logs)

    interactive = commands.add_parser(
        "interactive",
        help="inside salloc / srun --pty: start Ray on the allocation and serve, print port forwards",
        description="Run inside an allocation (salloc / srun --pty): start the Ray head and a "
        "worker on every other node, launch the serve command on the head node, and print the "
        "ssh port-forward commands for Serve and the Ray dashboard. Ctrl-C stops everything.",
    )
    interactive.add_argument(
        "--serve-command", default="microforge serve up",
        help="command launched against the cluster; '--host H --port P' are appended "
        "(default: %(default)s)",
    )
    interactive.add_argument("--gpus-per-node", type=int, default=None,
                             help="GPUs per node for Ray (default: $SLURM_GPUS_PER_NODE, else 0)")
    _add_environment_options(interactive)
    _add_ray_options(interactive)
    interactive.add_argument("--job-dir", help="directory for the launcher script and Ray node logs")
    interactive.add_argument("--dry-run", action="store_true", help="print the launcher script; run nothing")
    interactive.set_defaults(func=_interactive)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def _add_resource_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Slurm resources")
    group.add_argument("--nodes", type=_int, help="nodes (one Ray node each; default 1)")
    group.add_argument("--gpus-per-node", type=_int, help="GPUs per node (default 0)")
    group.add_argument("--gpu-request", choices=("gpus-per-node", "gres"),
                       help="request GPUs as --gpus-per-node=G (default) or --gres=gpu:G")
    group.add_argument("--cpus-per-task", type=_int, help="CPUs per node (default 1)")
    group.add_argument("--mem", help="memory per node, e.g. 16G (default: the partition's)")
    group.add_argument("--time", help="time limit: minutes, HH:MM:SS or D-HH:MM:SS (default: the partition's)")
    group.add_argument("--partition", help="partition(s), comma-separated")
    group.add_argument("--account", help="account to charge")
    group.add_argument("--qos", help="quality of service")
    group.add_argument("--job-name", help="job name (default microforge)")
    _add_environment_options(parser)


def _add_environment_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("environment on the nodes")
    group.add_argument("--env", help="venv or conda env directory to activate")
    group.add_argument("--module", dest="modules", action="append", metavar="NAME",
                       help="`module load NAME` first (repeatable)")
    group.add_argument("--setup", action="append", metavar="LINE",
                       help="shell line run before Ray starts, verbatim (repeatable)")
    group.add_argument("--profile", help="JSON/YAML file with defaults for any of these options "
                       "(keys as option names, e.g. partition, env, modules, setup)")


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray")
    group.add_argument("--ray-auth", choices=("disabled", "token"),
                       help="Ray token authentication; token: a fresh token per job in the job dir "
                       "(default disabled)")
    group.add_argument("--port-base", type=_int,
                       help="first of the 10000 ports Ray jobs take 100 of, by job id (default 20000)")
    group.add_argument("--worker-ports", metavar="MIN-MAX",
                       help="port range for Ray workers (default: ports the kernel picks)")
    group.add_argument("--ray-tmp", help="short node-local dir for Ray's temp dirs (default /tmp)")
    group.add_argument("--ready-timeout", type=_int,
                       help="seconds to wait for every Ray node to join (default 300)")
    group.add_argument("--bind", choices=("localhost", "all"),
                       help="dashboard/Serve listen on 127.0.0.1 (forward via the node) or all "
                       "interfaces (forward via the login host); default localhost")
    group.add_argument("--login-host", help="login host named in the ssh commands (default $SLURM_SUBMIT_HOST)")


_SPEC_KEYS = (
    "nodes", "gpus_per_node", "gpu_request", "cpus_per_task", "mem", "time", "partition", "account",
    "qos", "job_name", "env", "modules", "setup", "ray_auth", "port_base", "worker_ports", "ray_tmp",
    "ready_timeout", "bind", "login_host",
)


def _spec(args: argparse.Namespace):
    from .spec import build_spec

    values = {key: getattr(args, key, None) for key in _SPEC_KEYS}
    return build_spec(values, profile=args.profile)


def _submit(args: argparse.Namespace) -> int:
    from .jobs import default_job_dir, submit_job
    from .script import render_job_script
    from .spec import ClusterError

    command = list(args.job_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ClusterError("no command given: put it after '--', e.g. -- microforge synth crystals ...")
    spec = _spec(args)
    if args.dry_run:
        job_dir = os.path.abspath(os.path.expanduser(args.job_dir)) if args.job_dir else str(default_job_dir(spec))
        print(render_job_script(spec, job_dir, command), end="")
        return 0
    record = submit_job(spec, command, job_dir=args.job_dir)
    print(f"submitted job {record.job_id} ({spec.nodes} node(s)): {shlex.join(command)}")
    print(f"job dir: {record.job_dir}")
    print(f"follow:  microforge cluster logs {record.job_id} --follow   (or squeue -j {record.job_id})")
    print(f"cancel:  microforge cluster cancel {record.job_id}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from . import slurm
    from .jobs import find_job
    from .spec import ClusterError

    state = slurm.job_state(args.job_id)
    if state is None:
        raise ClusterError(f"job {args.job_id}: unknown to squeue and scontrol (and sacct, if accounting is on)")
    details = "  ".join(f"{k}={v}" for k, v in state.details.items() if k not in ("JobId", "State", "JobState"))
    print(f"job {state.job_id}: {state.state}  {details}".rstrip())
    record = find_job(args.job_id)
    if record is not None:
        print(f"log: {record.log}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from . import slurm

    slurm.cancel(args.job_id)
    print(f"cancelled job {args.job_id}; its Ray cluster is being torn down")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from .jobs import stream_log

    stream_log(args.job_id, follow=args.follow)
    return 0


def _interactive(args: argparse.Namespace) -> int:
    from .jobs import exec_interactive, interactive_default_dir
    from .script import render_job_script
    from .spec import ClusterError

    try:
        serve = shlex.split(args.serve_command)
    except ValueError as exc:
        raise ClusterError(f"--serve-command: {exc}") from None
    if not serve:
        raise ClusterError("--serve-command is empty")
    if args.gpus_per_node is None:
        gpus = os.environ.get("SLURM_GPUS_PER_NODE", "0").split(":")[-1]
        args.gpus_per_node = int(gpus) if gpus.isdigit() else 0
    spec = _spec(args)
    # The launcher picks the host and port at run time; a wrapper appends them as options.
    command = ["bash", "-c", 'exec "$@" --host "$MF_SERVE_HOST" --port "$MF_SERVE_PORT"', "mf-serve", *serve]
    if args.dry_run:
        job_id = os.environ.get("SLURM_JOB_ID", "JOBID")
        job_dir = args.job_dir or str(interactive_default_dir(job_id))
        print(render_job_script(spec, os.path.abspath(job_dir), command, mode="interactive"), end="")
        return 0
    exec_interactive(spec, command, job_dir=args.job_dir)
    return 0
