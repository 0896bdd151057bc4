"""CLI group ``generate``: a dataset of images from a generator artifact.

``microforge generate ARTIFACT_DIR --n N --out DIR`` takes any artifact whose task is
``generate``; ``microforge generate WORKLOAD --model ARTIFACT_DIR ...`` (``WORKLOAD`` a registered
workload whose Serve task is ``generate``, e.g. ``fastgan``) also checks that the artifact was
trained by that workload, and ``generate artifact --model DIR`` is the explicit generic spelling.
``microforge generate diffusion --model ARTIFACT --phase t2|t2,t3|all ...`` samples a
class-conditional DDPM (``microforge train ddpm``) or a DreamBooth-tuned Stable Diffusion pipeline
(``microforge train dreambooth``) with classifier-free guidance.
"""

from __future__ import annotations

import argparse

from ..platform.cli import add_address_argument
from ..platform.config import suggest
from ..platform.errors import ConfigError
from ..trainers.workload import workloads

ANY_ARTIFACT = "artifact"
DIFFUSION = "diffusion"
# Options of diffusion sampling only (None: not given), with their defaults.
DIFFUSION_DEFAULTS = {"phase": "all", "steps": 50, "guidance": 7.5, "scheduler": "dpm"}
GAN_BATCH_SIZE, DIFFUSION_BATCH_SIZE = 16, 8


def _generator_workloads() -> dict[str, str]:
    """Every name (and alias) of a workload whose Serve task is ``generate`` -> its workload name."""
    return {name: w.name for w in workloads().values() if w.serve_task == "generate"
            for name in (w.name, *w.aliases)}


def register(groups: argparse._SubParsersAction) -> None:
    names = ", ".join([ANY_ARTIFACT, DIFFUSION, *sorted(_generator_workloads())])
    parser = groups.add_parser(
        "generate", help="generate a dataset of images with a trained generator",
        description="Generate N images from a generator artifact into a dataset directory (images/, "
                    "manifest.parquet with each image's seed, dataset.json) with Ray Data; "
                    "byte-identical whatever the number of workers; a re-run completes a partial dataset.")
    parser.add_argument("target", metavar="ARTIFACT_DIR|WORKLOAD",
                        help=f"a generator artifact directory; or, with --model, one of: {names}")
    parser.add_argument("--model", default=None, metavar="ARTIFACT_DIR",
                        help="the artifact, when TARGET names its workload (checked against the artifact)")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--out", required=True, help="dataset directory")
    parser.add_argument("--seed", type=int, default=0,
                        help="run seed; image i uses seed (SeedSequence(seed) + i) mod 2**32, in the manifest")
    parser.add_argument("--workers", type=int, default=None,
                        help="generator actors (default: every CPU, or every GPU / --gpus-per-worker)")
    parser.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per actor (default 0: CPU)")
    parser.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG bit depth")
    parser.add_argument("--truncation", type=float, default=None, metavar="T",
                        help="truncation trick: every latent value with |z| > T is redrawn (from the image's "
                             "seeded generator), T in [0.05, 4]; 0 or absent: none; recorded in dataset.json")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"images per forward pass or sampling batch (part of the dataset's identity; default "
                             f"{GAN_BATCH_SIZE}, diffusion {DIFFUSION_BATCH_SIZE})")
    diffusion = parser.add_argument_group("diffusion (generate diffusion --model DDPM_OR_DREAMBOOTH_ARTIFACT)")
    diffusion.add_argument("--phase", default=None,
                           help="phase of the images: one, a comma-separated list (images cycle through it) or "
                                "'all' (default)")
    diffusion.add_argument("--steps", type=int, default=None, help="sampling steps (default 50)")
    diffusion.add_argument("--guidance", type=float, default=None,
                           help="classifier-free guidance scale (default 7.5; 1: conditional only, 0: unconditional)")
    diffusion.add_argument("--scheduler", default=None, help="sampler: ddpm, ddim or dpm (DPM-Solver++, default)")
    parser.add_argument("--component", default=None,
                        help="the component to run (default: generator_ema, else generator, else the only one)")
    parser.add_argument("--split", default="1,0,0", help="train,val,test fractions (default: all train)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset made with other parameters")
    add_address_argument(parser)
    parser.set_defaults(func=_generate)


def resolve_target(target: str, model: str | None) -> tuple[str, str | None]:
    """(artifact directory, workload the artifact must belong to or None) from the CLI's TARGET
    and --model.

    Raises:
        ConfigError: --model with a TARGET that is neither ``artifact`` nor a generator workload.
    """
    if model is None:
        return target, None
    if target == ANY_ARTIFACT:
        return model, None
    table = _generator_workloads()
    if target not in table:
        valid = [ANY_ARTIFACT, *sorted(table)]
        raise ConfigError(f"'{target}' is not a generator workload{suggest(target, valid)}; "
                          f"with --model, TARGET is one of: {', '.join(valid)}")
    return model, table[target]


def _generate(args: argparse.Namespace) -> int:
    from ..datasets.writer import parse_split
    from .job import generate_dataset

    if args.target == DIFFUSION:
        return _generate_diffusion(args)
    given = [f"--{name}" for name in DIFFUSION_DEFAULTS if getattr(args, name) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: diffusion options; use 'generate {DIFFUSION} --model DDPM_ARTIFACT'")
    artifact, workload = resolve_target(args.target, args.model)
    summary = generate_dataset(artifact, args.n, args.out, seed=args.seed, workers=args.workers,
                               gpus_per_worker=args.gpus_per_worker, bits=args.bits,
                               batch_size=GAN_BATCH_SIZE if args.batch_size is None else args.batch_size,
                               component=args.component, split=parse_split(args.split), workload=workload,
                               truncation=args.truncation, overwrite=args.overwrite, address=args.address)
    print(f"dataset: {summary.out}")
    print(f"images: {summary.n} ({summary.rendered} generated, {summary.reused} already complete), "
          f"{args.bits}-bit PNG in images/; seeds in manifest.parquet"
          + (f"; latents truncated at {args.truncation:g}" if args.truncation else ""))
    print(f"time: {summary.seconds:.1f} s, {summary.images_per_second:.2f} images/s")
    return 0


def _generate_diffusion(args: argparse.Namespace) -> int:
    from ..datasets.writer import parse_split
    from .diffusion import generate_diffusion

    if args.model is None:
        raise ConfigError(f"generate {DIFFUSION} needs --model ARTIFACT (an artifact of 'microforge train ddpm' or "
                          "'microforge train dreambooth')")
    if args.bits != 8 or args.truncation:
        raise ConfigError("--bits and --truncation are GAN options; diffusion writes 8-bit PNG")
    options = {name: getattr(args, name) if getattr(args, name) is not None else default
               for name, default in DIFFUSION_DEFAULTS.items()}
    summary = generate_diffusion(args.model, args.n, args.out, seed=args.seed, workers=args.workers,
                                 gpus_per_worker=args.gpus_per_worker, 
                                 batch_size=DIFFUSION_BATCH_SIZE if args.batch_size is None else args.batch_size,
                                 component=args.component, split=parse_split(args.split), overwrite=args.overwrite,
                                 address=args.address, **options)
    print(f"dataset: {summary.out}")
    print(f"images: {summary.n} ({summary.rendered} generated, {summary.reused} already complete), 8-bit PNG in "
          f"images/; phase and seed in manifest.parquet and metadata.json")
    print(f"sampling: {options['scheduler']}, {options['steps']} steps, guidance {options['guidance']:g}")
    print(f"time: {summary.seconds:.1f} s, {summary.images_per_second:.2f} images/s")
    return 0
