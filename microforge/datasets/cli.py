"""CLI groups ``synth`` (render datasets) and ``data`` (inspect and prepare them)."""

from __future__ import annotations

import argparse
import json

from ..platform.cli import add_address_argument
from .cars import cli as cars_cli
from .embryo import cli as embryo_cli
from .output_args import add_output_arguments, output_kwargs
from .pipeline import cli as pipeline_cli
from .unaligned import cli as unaligned_cli


def register(groups: argparse._SubParsersAction) -> None:
    synth = groups.add_parser("synth", help="render synthetic datasets on Ray")
    kinds = synth.add_subparsers(dest="command", metavar="KIND", required=True)

    crystals = kinds.add_parser("crystals", help="DIC rod crystals with oriented-box labels")
    crystals.add_argument("--preset", default="default",
                          help="preset name (default, standard) or a JSON/YAML config file")
    crystals.add_argument("--n", type=int, required=True, help="number of images")
    add_output_arguments(crystals)
    crystals.add_argument("--seed", type=int, default=0)
    crystals.add_argument("--workers", type=int, default=None,
                          help="parallel render tasks (default: every CPU of the Ray cluster)")
    crystals.add_argument("--format", dest="image_format", choices=("png", "jpg", "tif"), default="png")
    crystals.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions")
    crystals.add_argument("--min-visible", type=float, default=0.25,
                          help="drop rods cut by the border with less than this fraction visible")
    crystals.add_argument("--overwrite", action="store_true",
                          help="replace a dataset made with another configuration")
    add_address_argument(crystals)
    crystals.set_defaults(func=_synth_crystals)
    cars_cli.register(kinds)
    unaligned_cli.register(kinds)
    embryo_cli.register(kinds)

    data = groups.add_parser("data", help="inspect and prepare datasets")
    data_cmds = data.add_subparsers(dest="command", metavar="COMMAND", required=True)
    info = data_cmds.add_parser("info", help="summarise a dataset directory")
    info.add_argument("path")
    info.set_defaults(func=_data_info)
    pipeline_cli.register(data_cmds)
    embryo_cli.register_data(data_cmds)


def _synth_crystals(args: argparse.Namespace) -> int:
    from .crystals import generate_dataset, load_preset
    from .writer import parse_split

    summary = generate_dataset(
        load_preset(args.preset), args.n, args.out, seed=args.seed, image_format=args.image_format,
        split=parse_split(args.split), min_visible_fraction=args.min_visible, workers=args.workers,
        overwrite=args.overwrite, address=args.address, **output_kwargs(args),
    )
    counts = summary.counts
    print(summary.report(f"{counts['labels']} oriented boxes ({counts['truncated']} truncated at the border) "
                         "in labels_dota/, labels_yolo_obb/, labels/ (Ultralytics, with dataset.yaml)"))
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from .manifest import column_kinds, read_info, read_manifest, split_counts
    from .store import Store

    table = read_manifest(args.path, require_complete=False)  # validates dataset.json and the manifest
    info = read_info(args.path)
    options = info.get("options") if isinstance(info.get("options"), dict) else {}
    layout = options.get("layout", "files")
    if layout == "shards":
        layout += f" ({len(set(table.column('shard').to_pylist()))} of up to {options.get('shard_size', '?')} samples)"
    store = Store(args.path)
    print(f"dataset: {store.local.absolute() if store.local is not None else store}")
    print(f"kind: {info.get('kind', '?')}  status: {info.get('status', '?')}  seed: {info.get('seed', '?')}  "
          f"renderer: v{info.get('renderer_version', '?')}  config hash: {info.get('config_hash', '?')[:12]}")
    print(f"layout: {layout}")
    print(f"samples: {table.num_rows}  counts: {json.dumps(info.get('counts', {}), sort_keys=True)}")
    print("splits: " + ", ".join(f"{split} {n}" for split, n in split_counts(table).items()))
    print("columns: " + ", ".join(f"{name} ({kind})" for name, kind in column_kinds(table).items()))
    return 0
