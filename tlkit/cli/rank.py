"""``tlkit rank``: rank candidate backbones (or one backbone's layer groups) on a datamodule before training.

Follows LightningCLI's conventions: ``--data`` takes any tlkit image or audio datamodule by short name or class_path,
``--config`` reads YAML, ``--print_config`` prints the resolved configuration. The ranked table is printed, written
as CSV and JSON into a new ``logs/<name>/version_<n>`` folder, and logged to TensorBoard there.

    tlkit rank --data DigitsDataModule --data.labels_per_class 10 \\
        --candidates '[tf_efficientnet_lite0, tf_efficientnet_lite1, resnet50@null]'
    tlkit rank --data DigitsDataModule --layers_of tf_efficientnet_lite0
    tlkit rank --data VoicesDataModule --candidates '[audio:resemblyzer, audio:resemblyzer@null]'
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentParser
from lightning.pytorch.loggers import TensorBoardLogger

from tlkit.cli._subcommand import run_reporting, subcommand_parser
from tlkit.datamodules import AudioDataModule, ImageDataModule  # imports every datamodule: short names resolve
from tlkit.engines.model_ranking import (
    SCORES,
    Ranked,
    Score,
    markdown_table,
    rank_backbones,
    rank_layers,
    write_results,
)
from tlkit.errors import config_error
from tlkit.features import CacheMode, FeatureCache


def build_parser() -> ArgumentParser:
    parser = subcommand_parser("rank", __doc__.split("\n\n")[0])
    parser.add_subclass_arguments((ImageDataModule, AudioDataModule), "data", required=True, instantiate=True)
    parser.add_argument(
        "--candidates",
        type=list[str],
        default=[],
        help="Backbones to rank: timm names, torchvision:<name>, or <name>@<weights> (imagenet, null or a file).",
    )
    parser.add_argument(
        "--layers_of", type=str | None, default=None, help="Rank the layer groups of this one backbone instead."
    )
    parser.add_argument("--weights", type=str | None, default="imagenet", help="Weights of candidates without @.")
    parser.add_argument(
        "--scores",
        type=list[Score],
        default=list(SCORES),
        help="Scores to compute; [logme] alone costs little beyond the forward passes.",
    )
    parser.add_argument("--sort_by", type=Score, default="logme", help="The score the table is ordered by.")
    parser.add_argument(
        "--cache_features",
        type=CacheMode,
        default="disk",
        help="Keep candidates' features on disk (a later `FeatureExtraction` run with `cache_features: disk` and "
        "`augment: false` reuses them) or in memory.",
    )
    parser.add_argument("--cache_dir", type=str, default=".tlkit_cache", help="Folder of the disk cache.")
    parser.add_argument("--save_dir", type=str, default="logs", help="Where the run folder is created.")
    parser.add_argument("--name", type=str | None, default=None, help="Run name (default: the config's file stem).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the baselines' cross-validation folds.")
    return parser


def run(args: Sequence[str]) -> list[Ranked]:
    parser = build_parser()
    config = parser.parse_args(list(args))
    init = parser.instantiate_classes(config)
    if not init.candidates and init.layers_of is None:
        raise config_error("candidates", "at least one backbone to rank (or `layers_of`)", init.candidates)
    if init.candidates and init.layers_of is not None:
        raise config_error("layers_of", "unset when `candidates` are given", init.layers_of)

    def progress(line: str) -> None:
        print(f"tlkit rank: {line}", file=sys.stderr, flush=True)

    if init.layers_of is not None:
        progress(f"scoring the layer groups of {init.layers_of}")
        results = rank_layers(
            init.data, init.layers_of, init.weights, seed=init.seed, scores=init.scores, progress=progress
        )
        title = f"Layer groups of `{init.layers_of}`, input to output"
    else:
        cache = FeatureCache(init.cache_features, init.cache_dir)
        results = rank_backbones(
            init.data, init.candidates, init.weights, cache, init.sort_by, init.seed, init.scores, progress
        )
        title = f"Candidates, best first by `{init.sort_by}`"
    table = markdown_table(results, init.sort_by if init.layers_of is None else None)
    logger = TensorBoardLogger(init.save_dir, name=init.name or _config_stem(config) or "rank")
    log_dir = Path(logger.log_dir)
    csv_path, json_path = write_results(results, log_dir)
    (log_dir / "config.yaml").write_text(parser.dump(config, skip_none=False))
    writer = logger.experiment
    for position, result in enumerate(results):
        for score in SCORES:
            if result.scores[score] is not None:
                writer.add_scalar(f"rank/{score}/{result.candidate}", result.scores[score], position)
    writer.add_text("rank/table", f"{title}\n\n{table}")
    writer.flush()
    print(f"{title}\n\n{table}\n\nWritten: {csv_path}, {json_path} (TensorBoard: {log_dir})")
    return results


def _config_stem(config) -> str | None:
    paths = config.get("config") or []
    last = paths[-1] if paths else None
    return Path(str(last)).stem if last is not None else None


def main(args: Sequence[str]) -> None:
    """``tlkit rank`` with user errors as one line (``TLKIT_TRACEBACK=1`` for the traceback)."""
    run_reporting("rank", run, args)


if __name__ == "__main__":
    main(sys.argv[1:])
