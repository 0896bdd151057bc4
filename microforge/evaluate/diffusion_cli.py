"""``microforge eval diffusion --data IMAGE_FOLDER (--model DDPM | --generated DIR)``: phase accuracy
of generated embryo images under a classifier trained on real frames, classifier-feature Fréchet
distance and the image-set metrics (see :mod:`microforge.evaluate.diffusion`)."""

from __future__ import annotations

import argparse

from ..platform.cli import add_address_argument


def register(eval_cmds: argparse._SubParsersAction) -> None:
    """Add ``eval diffusion`` to the ``eval`` group's subcommands."""
    parser = eval_cmds.add_parser(
        "diffusion", help="score a class-conditional DDPM: do its images look like their phase?",
        description="Train a small phase classifier on the frames of an embryo image folder (a quarter of its "
        "videos held out to show how far it can be trusted), then score generated images: per-phase accuracy "
        "of the classifier on them, Fréchet distance on its penultimate features, and the 'eval images' "
        "metrics (texture Fréchet distance, KID, statistics). The images come from --generated (a directory of "
        "'microforge generate diffusion') or are generated from --model. Writes report.json, samples.png and "
        "histograms.png (and generated/) to --out.")
    parser.add_argument("--data", required=True, help="embryo image folder of real or rendered frames "
                        "(microforge data embryo image-folder)")
    parser.add_argument("--model", default=None, help="DDPM artifact (microforge train ddpm): images are generated "
                        "from it, unless --generated is given (then it is checked to be their model)")
    parser.add_argument("--generated", default=None, help="directory written by 'microforge generate diffusion'")
    parser.add_argument("--out", default=None, help="report directory (default: <model or generated>/../"
                        "eval-diffusion; replaced)")
    parser.add_argument("--phase", default=None, help="phases to score: a comma-separated list or 'all' "
                        "(default: every phase of the image folder, or of --generated)")
    parser.add_argument("--n", type=int, default=None, help="images to generate (default 8 per phase; "
                        "phases take turns)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 50)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--scheduler", default=None, help="sampler: ddpm, ddim or dpm (default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generation, of the held-out videos and of "
                        "the classifier (default 0)")
    parser.add_argument("--classifier-steps", type=int, default=None,
                        help="training steps of the phase classifier (default 400)")
    parser.add_argument("--side", type=int, default=None, help="image side everything is compared at "
                        "(default: the generated images', at most 128)")
    parser.add_argument("--workers", type=int, default=None, help="generator actors (default: every CPU)")
    add_address_argument(parser)
    parser.set_defaults(func=_eval_diffusion)


def _fmt(value: float | None) -> str:
    return "     -" if value is None else f"{value:6.3f}"


def _eval_diffusion(args: argparse.Namespace) -> int:
    from .diffusion import evaluate_diffusion
    from .phase_classifier import CLASSIFIER_STEPS

    steps = CLASSIFIER_STEPS if args.classifier_steps is None else args.classifier_steps
    r = evaluate_diffusion(args.data, model=args.model, generated=args.generated, out=args.out, phases=args.phase,
                           n=args.n, steps=args.steps, guidance=args.guidance, scheduler=args.scheduler,
                           seed=args.seed, classifier_steps=steps, side=args.side, workers=args.workers,
                           address=args.address)
    c = r["classifier"]
    print(f"classifier: {len(c['classes'])} phases, trained on {c['train_images']} frames, checked on "
          f"{c['held_out_images']} frames of {c['held_out_videos']} held-out video(s), at {r['side']} px")
    print(f"{'phase':<6} {'real n':>6} {'real acc':>8} {'gen n':>6} {'gen acc':>8}  taken for")
    for row in r["per_phase"]:
        print(f"{row['phase']:<6} {row['real_images']:>6} {_fmt(row['real_accuracy']):>8} "
              f"{row['generated_images']:>6} {_fmt(row['generated_accuracy']):>8}  {row['taken_for'] or '-'}")
    print(f"{'mean':<6} {'':>6} {_fmt(r['mean_real_phase_accuracy']):>8} {'':>6} {_fmt(r['mean_phase_accuracy']):>8}")
    floor = r["fd_classifier_floor"]
    print(f"classifier-feature Fréchet distance: {r['fd_classifier']:.4f}"
          + (f" (held-out real frames: {floor:.4f})" if floor is not None else ""))
    s = r["image_set"]
    print(f"texture Fréchet distance: {s['frechet_distance']:.4f}  KID: {s['kid_mean']:.5f} ± {s['kid_std']:.5f}")
    if c["held_out_images"] and (r["mean_real_phase_accuracy"] or 0) < 0.5:
        print("warning: the classifier is right on fewer than half the held-out real frames; "
              "its verdicts on generated images are weak evidence")
    print(f"report: {r['out']}/report.json (samples.png, histograms.png"
          + (", generated/" if r["generation"] else "") + f"); {r['seconds']:.1f} s")
    return 0
