"""``microforge data prepare|enhance|fix|analyze|split``."""

from __future__ import annotations

import argparse

from ...platform.cli import add_address_argument


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel tasks (default: every CPU of the Ray cluster)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset in OUT made with other parameters")
    add_address_argument(parser)


def register(data_cmds: argparse._SubParsersAction) -> None:
    """Add the pipeline commands to the ``data`` group's subcommands."""
    prepare = data_cmds.add_parser(
        "prepare", help="normalise a folder of TIFF/PNG images (any bit depth) into a dataset",
        description="Find .tif/.tiff/.png files under IN (recursively), normalise each to its own "
        "percentiles (optionally after log1p) and write them as a dataset in OUT.")
    prepare.add_argument("input", metavar="IN")
    prepare.add_argument("out", metavar="OUT")
    prepare.add_argument("--p-low", type=float, default=5.0, help="lower clip percentile (default 5)")
    prepare.add_argument("--p-high", type=float, default=95.0, help="upper clip percentile (default 95)")
    prepare.add_argument("--log", action="store_true", help="log1p the intensities before the percentiles")
    prepare.add_argument("--bits", choices=("8", "16", "float"), default="16",
                         help="output: 8- or 16-bit integers, or float32 in [0, 1] (TIFF; default 16)")
    prepare.add_argument("--denoise", choices=("none", "median", "bilateral", "nlm"), default="none")
    prepare.add_argument("--page", type=int, default=0, help="page of multi-page TIFFs (default: the first)")
    _job_options(prepare)
    prepare.set_defaults(func=_prepare)

    enhance = data_cmds.add_parser("enhance", help="contrast-enhance a dataset into a new dataset")
    enhance.add_argument("input", metavar="IN", help="dataset directory")
    enhance.add_argument("out", metavar="OUT")
    enhance.add_argument("--op", required=True, choices=("clahe", "gamma", "adaptive_gamma", "equalize", "unsharp"))
    enhance.add_argument("--clip-limit", type=float, help="clahe: clip limit (default 0.01)")
    enhance.add_argument("--kernel-size", type=float, help="clahe: tile size in pixels (default: 1/8 of the image)")
    enhance.add_argument("--nbins", type=float, help="clahe, equalize: histogram bins (default 256)")
    enhance.add_argument("--gamma", type=float, help="gamma: the exponent (default 1)")
    enhance.add_argument("--target-mean", type=float, help="adaptive_gamma: the mean to reach (default 0.5)")
    enhance.add_argument("--radius", type=float, help="unsharp: Gaussian sigma in pixels (default 1)")
    enhance.add_argument("--amount", type=float, help="unsharp: strength (default 1)")
    _job_options(enhance)
    enhance.set_defaults(func=_enhance)

    fix = data_cmds.add_parser("fix", help="re-stretch images written too dark, into a new dataset")
    fix.add_argument("input", metavar="IN", help="dataset directory")
    fix.add_argument("out", metavar="OUT")
    fix.add_argument("--threshold", type=float, default=0.1,
                     help="fix images whose 99th percentile is below this fraction of the range (default 0.1)")
    fix.add_argument("--p-low", type=float, default=0.1, help="re-stretch: lower percentile (default 0.1)")
    fix.add_argument("--p-high", type=float, default=99.9, help="re-stretch: upper percentile (default 99.9)")
    _job_options(fix)
    fix.set_defaults(func=_fix)

    analyze = data_cmds.add_parser("analyze", help="statistics, plots and an HTML report of a dataset")
    analyze.add_argument("path", metavar="DIR", help="dataset directory (or a folder of images)")
    analyze.add_argument("--out", required=True, metavar="REPORT", help="report directory")
    analyze.add_argument("--workers", type=int, default=None)
    add_address_argument(analyze)
    analyze.set_defaults(func=_analyze)

    split = data_cmds.add_parser("split", help="grouped train/val/test split written into the manifest")
    split.add_argument("path", metavar="DIR", help="dataset directory")
    split.add_argument("--ratios", default="0.8,0.1,0.1", help="train,val,test fractions summing to 1")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--group-by", default="parent",
                       help="'parent' (the source's folder) or a regex whose first group names the group")
    split.set_defaults(func=_split)


def _print_job(summary, what: str) -> None:
    print(f"dataset: {summary.out}")
    print(f"images: {len(summary.rows)} ({summary.processed} {what}, {summary.reused} already complete); "
          f"time {summary.seconds:.1f} s")
    errors = summary.errors
    if errors:
        print(f"unreadable: {len(errors)} (in the manifest's 'error' column, split 'error')")
        for row in errors:
            print(f"  {row.get('source') or row.get('image')}: {row['error']}")


def _prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare

    summary = prepare(args.input, args.out, p_low=args.p_low, p_high=args.p_high, log1p=args.log, bits=args.bits,
                      denoise_method=args.denoise, page=args.page, workers=args.workers,
                      overwrite=args.overwrite, address=args.address)
    _print_job(summary, "prepared")
    return 0


def _enhance(args: argparse.Namespace) -> int:
    from .enhance import enhance

    names = ("clip_limit", "kernel_size", "nbins", "gamma", "target_mean", "radius", "amount")
    params = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    summary = enhance(args.input, args.out, args.op, params, workers=args.workers, overwrite=args.overwrite,
                      address=args.address)
    _print_job(summary, f"enhanced ({args.op})")
    return 0


def _fix(args: argparse.Namespace) -> int:
    from .enhance import fix

    summary = fix(args.input, args.out, threshold=args.threshold, p_low=args.p_low, p_high=args.p_high,
                  workers=args.workers, overwrite=args.overwrite, address=args.address)
    _print_job(summary, "checked")
    print(f"re-stretched: {sum(bool(r.get('fixed')) for r in summary.rows)} image(s) below "
          f"{args.threshold:g} of the range at the 99th percentile")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .analyze import analyze

    stats = analyze(args.path, args.out, workers=args.workers, address=args.address)
    agg = stats["aggregate"]
    print(f"report: {args.out}/report.html ({stats['images']} images, {len(stats['errors'])} unreadable)")
    print("  ".join(f"{name} {agg[name]['mean']:.4g}" for name in agg))
    return 0


def _split(args: argparse.Namespace) -> int:
    from .split import parse_ratios, split_dataset

    counts = split_dataset(args.path, parse_ratios(args.ratios), seed=args.seed, group_by=args.group_by)
    print(f"split {args.path}: train {counts['train']}, val {counts['val']}, test {counts['test']} "
          f"(grouped by {args.group_by}, seed {args.seed})")
    return 0
