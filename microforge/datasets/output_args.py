"""The output options every ``microforge synth`` command shares: where and how samples are written."""

from __future__ import annotations

import argparse
from typing import Any

from .images import FAST_PNG
from .writer import DEFAULT_SHARD_SIZE, LAYOUTS


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True,
                        help="dataset directory, or a URI: file://, s3://bucket/prefix, gs://, abfs://, hdfs://")
    parser.add_argument("--layout", choices=LAYOUTS, default="files",
                        help="files: one file per image and label; shards: WebDataset tar shards (default files)")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                        help=f"samples per shard with --layout shards (default {DEFAULT_SHARD_SIZE})")
    parser.add_argument("--png-level", default=FAST_PNG,
                        help=f"PNG compression: '{FAST_PNG}' (default: AVG filter, Huffman-only; fastest and "
                             "smallest on noisy micrographs) or a zlib level 0-9 (3: the former default)")


def output_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"png_level": args.png_level, "layout": args.layout, "shard_size": args.shard_size}
