"""CLI group ``tune``: ``tune hparams`` (Ray Tune search) and ``tune batch-size`` (hardware search)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..platform.cli import add_address_argument
from ..platform.errors import ConfigError

DEFAULT_EXPERIMENTS_DIR = "tune"


def register(groups: argparse._SubParsersAction) -> None:
    tune = groups.add_parser("tune", help="hyperparameter and hardware batch-size searches")
    commands = tune.add_subparsers(dest="command", metavar="COMMAND", required=True)

    hp = commands.add_parser(
        "hparams", help="Ray Tune search over a workload's options (ASHA), best model exported",
        description="Search a workload's options and job hyperparameters (batch_size, precision, "
                    "gradient_clip_val) with Ray Tune: every trial is a training run; ASHA stops trials that "
                    "fall behind. Writes results.parquet, TensorBoard logs per trial and "
                    "the best trial's model artifact into the experiment directory.")
    _add_workload_argument(hp, required=False)
    hp.add_argument("--space", default=None, help="search space YAML (default: the workload's default space)")
    hp.add_argument("--samples", type=int, default=8, help="configurations sampled (default %(default)s)")
    hp.add_argument("--max-epochs", type=int, default=10, help="epochs of a trial never stopped (default %(default)s)")
    hp.add_argument("--scheduler", choices=("asha", "pbt", "none"), default="asha",
                    help="trial scheduler: asha (stop weak trials), pbt (population-based training: weak trials "
                         "continue from strong ones with perturbed values), none (default asha)")
    hp.add_argument("--perturbation-interval", type=int, default=2,
                    help="PBT: reports between perturbations (default %(default)s)")
    hp.add_argument("--grace-period", type=int, default=1,
                    help="ASHA: reports (one per the workload's cadence of epochs or steps) before a trial can "
                         "be stopped (default %(default)s)")
    hp.add_argument("--reduction-factor", type=int, default=2, help="ASHA: keep 1/factor of trials per rung")
    hp.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial (default 0: CPU)")
    hp.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial's worker (default: planned)")
    hp.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as many as fit)")
    hp.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    hp.add_argument("--out", default=DEFAULT_EXPERIMENTS_DIR,
                    help=f"experiments directory (default ./{DEFAULT_EXPERIMENTS_DIR})")
    hp.add_argument("--name", default=None, help="experiment name (default <workload>-<time>)")
    hp.add_argument("--resume", metavar="EXPERIMENT_DIR", default=None,
                    help="continue an interrupted experiment (its own settings are used)")
    add_address_argument(hp)
    hp.set_defaults(func=_hparams)

    bs = commands.add_parser(
        "batch-size", help="largest and fastest batch per model preset and resolution; stored as recommendations",
        description="For each preset (model size) and resolution, find the largest batch that runs a full training "
                    "step (doubling, then bisection) and the batch with the best samples/s, each probe in a fresh "
                    "Ray actor (one GPU each, searches in parallel across GPUs; on CPUs against --memory-budget). "
                    "Per resolution, the preset whose best batch trains the most samples/s is recommended. The "
                    "results become the default batch size (and, when several presets were compared, the "
                    "default preset) of `microforge train` on this device.")
    _add_workload_argument(bs, required=True)
    bs.add_argument("--presets", "--sizes", dest="presets", default=None,
                    help="comma-separated presets or model sizes (default: all of the workload's)")
    bs.add_argument("--resolution", "--resolutions", dest="resolution", required=True,
                    help="input side(s) in pixels, comma-separated (e.g. 256,512)")
    bs.add_argument("--precision", default="fp32", help="fp32, bf16-mixed or 16-mixed (default fp32)")
    bs.add_argument("--memory-budget", default=None,
                    help="memory a probe may use, e.g. 4GiB: required on CPUs (peak RSS), optional on GPUs")
    bs.add_argument("--max-batch", type=int, default=None, help="never probe above this batch size")
    bs.add_argument("--timeout", type=float, default=300.0, help="seconds before a probe is killed (default 300)")
    bs.add_argument("--device", choices=("auto", "gpu", "cpu"), default="auto",
                    help="probe on GPUs or CPUs (default: GPUs when the cluster has them)")
    bs.add_argument("--cpus-per-probe", type=float, default=1.0, help="CPUs per probe actor (default 1)")
    bs.add_argument("--parallel", type=int, default=None,
                    help="searches at once (default: one per GPU; 1 on CPUs)")
    bs.add_argument("--steps", type=int, default=3, help="timed training steps per probe (default 3)")
    bs.add_argument("--warmup-steps", type=int, default=1, help="untimed steps before them (default 1)")
    bs.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a further workload option of the probed models (JSON value), e.g. width=8 for a tiny "
                         "CPU try; such results describe another model and are not stored")
    bs.add_argument("--no-save", action="store_true", help="do not store the recommendations")
    add_address_argument(bs)
    bs.set_defaults(func=_batch_size)


def _add_workload_argument(parser: argparse.ArgumentParser, *, required: bool) -> None:
    from ..trainers.workload import workload_names

    parser.add_argument("--workload", "--trainer", dest="workload", metavar="NAME", required=required,
                        default=None, help=f"workload ({', '.join(workload_names())}; --trainer: the old spelling)")


def _print_watch(experiment_dir: Path | None, url: str | None) -> None:
    from .dashboards import tensorboard_command

    if experiment_dir is not None:
        print(f"experiment: {experiment_dir}")
    print(f"Ray dashboard: {url}" if url else
          "Ray dashboard: not running (a cluster started with its dashboard shows one here)")
    if experiment_dir is not None:
        print(f"TensorBoard: {tensorboard_command(experiment_dir)}", flush=True)


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def _hparams(args: argparse.Namespace) -> int:
    from .dashboards import tensorboard_command
    from .hparams import HparamSearch, resume_hparam_search, run_hparam_search

    if args.resume:
        result = resume_hparam_search(args.resume, address=args.address, on_start=_print_watch)
    else:
        if not args.workload:
            raise ConfigError("tune hparams needs --workload (or --resume EXPERIMENT_DIR)")
        search = HparamSearch(workload=args.workload, space=args.space, samples=args.samples, max_epochs=args.max_epochs,
                              scheduler=args.scheduler, gpus_per_trial=args.gpus_per_trial,
                              cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent,
                              grace_period=args.grace_period, reduction_factor=args.reduction_factor, seed=args.seed,
                              perturbation_interval=args.perturbation_interval)
        result = run_hparam_search(search, args.out, name=args.name, address=args.address, on_start=_print_watch)

    keys = sorted({k for t in result.trials for k in t.config})
    # the columns that tell trials apart (results.parquet has every one)
    searched = [k for k in keys if len({json.dumps(t.config.get(k), sort_keys=True) for t in result.trials}) > 1] or keys
    header = ["trial", "status", "epochs", result.metric, *searched]
    rows = [[t.trial_id, t.status, str(t.epochs), "-" if t.score is None else f"{t.score:.4f}",
             *[_format_value(t.config.get(k, "-")) for k in searched]] for t in result.trials]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    print(f"\n{len(result.trials)} trials in {result.seconds:.0f} s ({result.mode}imise {result.metric}):")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"results: {result.results_path}")
    if result.best is None:
        print("best model: none (no trial finished)")
        return 1
    print(f"best trial: {result.best.trial_id} ({result.metric} {result.best.score:.4f}), run {result.best.run_dir}")
    print(f"best model: {result.best_model}")
    print(f"TensorBoard: {tensorboard_command(result.experiment_dir)}")
    return 0


def _probe_options(pairs: list[str]) -> dict:
    """``["width=8", "augment=color"]`` -> ``{"width": 8, "augment": "color"}`` (JSON, else text)."""
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option '{pair}' is not KEY=VALUE")
        try:
            options[key.strip().replace("-", "_")] = json.loads(text)
        except ValueError:
            options[key.strip().replace("-", "_")] = text
    return options


def _batch_size(args: argparse.Namespace) -> int:
    from ..platform.recommendations import save_recommendations
    from ..trainers.workload import get_workload
    from .batch_search import BatchSizeSearch, parse_resolutions, recommendations_from_report
    from .bisection import BatchSizeError
    from .probe import format_bytes

    workload = get_workload(args.workload)
    presets = tuple(p.strip() for p in args.presets.split(",") if p.strip()) if args.presets else workload.presets
    options = _probe_options(args.option)
    search = BatchSizeSearch(workload=workload, presets=presets, resolutions=parse_resolutions(args.resolution),
                             precision=args.precision, device=args.device, memory_budget=args.memory_budget,
                             max_batch=args.max_batch, timeout_s=args.timeout, cpus_per_probe=args.cpus_per_probe,
                             parallel=args.parallel, warmup_steps=args.warmup_steps, measure_steps=args.steps,
                             options=options)
    report = search.run(address=args.address, on_start=lambda url: _print_watch(None, url))

    memory = format_bytes(report.device_memory_bytes)
    where = f"CPU, budget {memory}" if report.device == "cpu" else f"{report.device}, {memory}"
    sides = ", ".join(map(str, report.resolutions))
    print(f"\n{report.workload} at {sides} px, {report.precision}, on {where} ({report.seconds:.0f} s)")
    header = ["px", workload.preset_option, "max batch", "peak memory", "best batch", "samples/s", "step ms",
              "probes"]
    rows = []
    for resolution in report.resolutions:
        chosen = report.recommended(resolution)
        for preset in report.presets:
            result = report.results.get((preset, resolution))
            if result is None:
                rows.append([str(resolution), preset, "-", "-", "-", "-", "-", "failed"])
                continue
            best = result.best
            mark = " *" if chosen is not None and chosen[0] == preset and len(report.presets) > 1 else ""
            rows.append([str(resolution), preset + mark, f"{result.max_batch}{'+' if result.capped else ''}",
                         format_bytes(result.largest.peak_memory_bytes), str(result.best_batch),
                         f"{best.samples_per_s:.1f}", f"{best.step_time_s * 1000:.1f}", str(len(result.probes))])
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) if i == 1 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    if any(r.capped for r in report.results.values()):
        print("+: reached --max-batch; the limit may be higher")
    if len(report.presets) > 1:
        for resolution in report.resolutions:
            chosen = report.recommended(resolution)
            print(f"*: recommended at {resolution} px: " + (
                f"{workload.preset_option} {chosen[0]}, batch {chosen[1].best_batch} "
                f"({chosen[1].best.samples_per_s:.1f} samples/s)" if chosen else f"none ({workload.preset_option}s "
                                                                                 "failed to fit)"))
    if options:
        print(f"not stored: --option {', '.join(f'{k}={v}' for k, v in options.items())} probes another model "
              f"than the named {workload.preset_option}s")
    elif report.results and not args.no_save:
        path = save_recommendations(recommendations_from_report(report))
        flag = f"--{workload.preset_option.replace('_', '-')}"
        print(f"recommendations: {path} (`microforge train {workload.name}` without --batch-size uses the best batch "
              f"of its {flag}" + (f"; without either, the recommended {flag} and batch)" if len(report.presets) > 1
                                  else ")"))
    if report.errors:
        raise BatchSizeError("; ".join(report.errors.values()))
    return 0
