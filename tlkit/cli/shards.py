"""``tlkit shards``: write any tlkit image datamodule's splits as LitData shards, which `ShardsDataModule` streams
from a local folder or object storage.

    tlkit shards --data ImageFolderDataModule --data.data_dir data/flowers --output_dir shards/flowers
    tlkit fit --config configs/shards_finetune.yaml --data.path shards/flowers
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser

from tlkit.cli._subcommand import run_reporting, subcommand_parser
from tlkit.datamodules import ImageDataModule  # imports every datamodule, so they resolve by short name
from tlkit.datamodules.shards import write_shards


def build_parser() -> ArgumentParser:
    parser = subcommand_parser("shards", __doc__.split("\n\n")[0])
    parser.add_subclass_arguments(ImageDataModule, "data", required=True, instantiate=True)
    parser.add_argument("--output_dir", type=str, required=True, help="A new (or empty) folder for the shards.")
    parser.add_argument("--chunk_bytes", type=str, default="64MB", help="The size of each chunk file (LitData's).")
    return parser


def run(args: Sequence[str]) -> None:
    parser = build_parser()
    init = parser.instantiate_classes(parser.parse_args(list(args)))
    written = write_shards(init.data, init.output_dir, init.chunk_bytes)
    counts = ", ".join(f"{split} {count}" for split, count in written.items())
    print(f"tlkit shards: wrote {counts} samples to {init.output_dir}", file=sys.stderr)


def main(args: Sequence[str]) -> None:
    run_reporting("shards", run, args)
