"""``microforge synth embryo`` and ``microforge data embryo extract|split|image-folder``."""

from __future__ import annotations

import argparse

from ...platform.cli import add_address_argument


def register(kinds: argparse._SubParsersAction) -> None:
    """Add ``synth embryo`` to the ``synth`` group's subcommands."""
    cmd = kinds.add_parser("embryo", help="embryo time-lapse videos as the public dataset's ten files "
                                          "(7 focal planes, 16 annotated phases, time elapsed, grades)")
    cmd.add_argument("--videos", type=int, required=True, help="number of videos")
    cmd.add_argument("--frames", type=int, required=True, help="frames per video")
    cmd.add_argument("--out", required=True, help="directory for the ten files (missing or empty)")
    cmd.add_argument("--preset", default="default",
                     help="preset name (default: 500 px, tiny: 128 px) or a JSON/YAML config file")
    cmd.add_argument("--size", type=int, default=None, help="frame side in px (default: the preset's)")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--workers", type=int, default=None,
                     help="parallel render tasks (default: every CPU of the Ray cluster)")
    add_address_argument(cmd)
    cmd.set_defaults(func=_synth_embryo)


def register_data(data_cmds: argparse._SubParsersAction) -> None:
    """Add ``data embryo extract|split|image-folder`` to the ``data`` group's subcommands."""
    group = data_cmds.add_parser("embryo", help="the embryo time-lapse dataset: extract, split, image folders")
    cmds = group.add_subparsers(dest="embryo_command", metavar="COMMAND", required=True)

    extract = cmds.add_parser("extract", help="safely extract the ten dataset files, in parallel, then validate")
    extract.add_argument("archives", metavar="ARCHIVES", help="directory holding the ten files")
    extract.add_argument("dest", metavar="DEST", help="destination directory (missing or empty)")
    extract.add_argument("--workers", type=int, default=None,
                         help="parallel extraction tasks (default: every CPU of the Ray cluster)")
    extract.add_argument("--lenient", action="store_true",
                         help="keep the extracted files even if validation finds problems (they are listed)")
    add_address_argument(extract)
    extract.set_defaults(func=_extract)

    split = cmds.add_parser("split", help="fair train/val/test split by video, from the rarest phase")
    split.add_argument("extracted", metavar="EXTRACTED", help="directory written by 'data embryo extract'")
    split.add_argument("--out", required=True, help="the split file to write (JSON: train, val, test)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--weights", default="0.6,0.2,0.2", help="train,val,test shares (default 0.6,0.2,0.2)")
    split.set_defaults(func=_split)

    folder = cmds.add_parser("image-folder", help="the median frame of each phase of each video of a set")
    folder.add_argument("extracted", metavar="EXTRACTED", help="directory written by 'data embryo extract'")
    folder.add_argument("--split-file", required=True, help="the file written by 'data embryo split'")
    folder.add_argument("--set", dest="set_name", required=True, choices=("train", "val", "test"))
    folder.add_argument("--phases", default="all", help="'all' or a comma-separated list such as t2,t3")
    folder.add_argument("--out", required=True, help="the image folder to write (missing or empty)")
    folder.add_argument("--name", default=None, help="a name recorded in dataset.json (default: the folder's)")
    folder.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                        help="shuffle the images with --seed (default) or keep video, phase order")
    folder.add_argument("--seed", type=int, default=0)
    folder.add_argument("--focal", default="F0", help="focal plane: F-45 F-30 F-15 F0 F15 F30 F45 (default F0)")
    folder.set_defaults(func=_image_folder)


def _synth_embryo(args: argparse.Namespace) -> int:
    from .archives import write_archives
    from .config import EmbryoConfig, load_preset

    config = load_preset(args.preset)
    if args.size is not None:
        config = EmbryoConfig.load({**config.to_json_dict(), "size": args.size})
    summary = write_archives(config, args.videos, args.frames, args.out, seed=args.seed, workers=args.workers,
                             address=args.address)
    print(summary.report())
    return 0


def _extract(args: argparse.Namespace) -> int:
    from .extract import extract_archives

    print(extract_archives(args.archives, args.dest, workers=args.workers, address=args.address,
                           lenient=args.lenient).report())
    return 0


def _split(args: argparse.Namespace) -> int:
    from .split import format_counts, parse_weights, split_videos

    split, counts = split_videos(args.extracted, args.out, seed=args.seed, weights=parse_weights(args.weights))
    print(f"split: {args.out} (train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])} "
          "videos; no video in two splits)")
    print("videos having each phase:")
    print(format_counts(split, counts))
    return 0


def _image_folder(args: argparse.Namespace) -> int:
    from .image_folder import write_image_folder
    from .layout import parse_phases

    summary = write_image_folder(args.extracted, args.split_file, args.set_name, parse_phases(args.phases), args.out,
                                 focal=args.focal, shuffle=args.shuffle, seed=args.seed, name=args.name)
    print(summary.report())
    return 0
