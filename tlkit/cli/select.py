"""``tlkit select``: choose among finished runs by a logged metric, without target labels for domain adaptation.

Sweep a few values through the CLI (each ``tlkit fit`` is one run folder), then pick by a label-free validator:

    tlkit fit --config configs/domain_adaptation/mnist_digits_dann.yaml --model.init_args.trade_off 0.3
    tlkit fit --config configs/domain_adaptation/mnist_digits_dann.yaml --model.init_args.trade_off 1.0
    tlkit select --runs 'logs/mnist_digits_dann/version_*' --by val/snd

By default (``--by auto``) runs are chosen by their own checkpoint metric (the task's: val/acc, val/mae, val/miou;
val/safe_im for a domain-adaptation sweep), and domain-adaptation runs of different strategies by val/class_ami; on
a target whose classes are shapes (digits, characters), compare methods by val/pixel_ami; or by how much their
predictions agree (``--by consensus``):

    tlkit select --runs 'logs/mnist_digits_*/version_*' --by val/pixel_ami
    tlkit select --runs 'logs/mnist_digits_*/version_*' --by consensus
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser

from tlkit.cli._subcommand import run_reporting, subcommand_parser
from tlkit.engines.run_metrics import run_metrics
from tlkit.engines.run_selection import (
    AUTO,
    CONSENSUS,
    METHODS_METRIC,
    SHAPES_METHODS_METRIC,
    RunScore,
    automatic_metric,
    consensus_scores,
    differing_settings,
    direction_in_runs,
    metric_curve,
    score_runs,
    select_run,
)
from tlkit.errors import ConfigError, config_error


def build_parser() -> ArgumentParser:
    parser = subcommand_parser("select", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs",
        type=str | list[str],
        required=True,
        help="A run folder (logs/<name>/version_<n>) or glob pattern of them, or a list '[a, b]'; quote patterns so "
        "the shell keeps them.",
    )
    parser.add_argument(
        "--by",
        type=str,
        default=AUTO,
        help="The metric to select on: auto (the runs' checkpoint metric: the task's, such as val/acc or val/mae, or "
        "val/safe_im for domain adaptation; val/class_ami among domain-adaptation runs of different strategies), "
        "val/safe_im (IM that does not prefer a run worse than its source-only "
        "reference), val/im, val/snd, val/bnm, val/class_ami, val/pixel_ami (targets whose classes are shapes, such as "
        "digits), or any logged; or consensus (domain-adaptation runs: "
        "each run's best val/safe_im epoch, scored by the share of target validation images where it predicts the "
        "class of the mean prediction of all the runs).",
    )
    parser.add_argument(
        "--mode",
        type=Literal["auto", "max", "min"],
        default="auto",
        help="max or min; auto: the direction the runs' task or strategy gives the metric.",
    )
    parser.add_argument("--out", type=str | None, default=None, help="Also write the scores and the pick as JSON.")
    return parser


def expand_runs(patterns: Sequence[str]) -> list[Path]:
    """The fit run folders named or matched by ``patterns`` (each must name at least one).

    A folder with no ``checkpoints/`` (a ``tlkit test`` of an older tlkit, a run that failed before its first save)
    is no fit to choose: it is skipped, and named on stderr.
    """
    runs: list[Path] = []
    for pattern in patterns:
        matches = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser())) if Path(p).is_dir())
        fits = [m for m in matches if (m / "checkpoints").is_dir()]
        if not fits:
            found = f"{pattern} (no folder has checkpoints/)" if matches else pattern
            raise config_error("runs", "fit run folders (logs/<name>/version_<n>) or patterns matching some", found)
        skipped = [str(m) for m in matches if m not in fits]
        if skipped:
            print(f"tlkit select: skipped {len(skipped)} folder(s) with no fit: {', '.join(skipped)}", file=sys.stderr)
        runs += [m for m in fits if m not in runs]
    return runs


def table(scores: Sequence[RunScore], settings: Sequence[dict], best: RunScore, metric: str) -> str:
    keys = sorted({k for s in settings for k in s})
    # Domain-adaptation runs log collapse diagnostics: shown for the picked epoch, with a word where it collapsed.
    diagnosed = any("val/target_top_class_share" in s.diagnostics for s in scores)
    extra = ["top class share", "collapsed onto"] if diagnosed else []
    lines = [
        "| | run | " + " | ".join(keys + [f"best {metric}", "epoch", *extra, "checkpoint"]) + " |",
        "|---" * (len(keys) + 5 + len(extra)) + "|",
    ]
    for score, swept in zip(scores, settings):
        cells = [str(swept.get(k)) for k in keys] + [f"{score.value:.4f}", str(score.epoch)]
        if diagnosed:
            share = score.diagnostics.get("val/target_top_class_share")
            cells += ["" if share is None else f"{share:.2f}", score.collapse()]
        cells.append(str(score.checkpoint))
        lines.append(f"| {'*' if score is best else ''} | {score.run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: Sequence[str]) -> RunScore:
    config = build_parser().parse_args(list(args))
    runs = expand_runs([config.runs] if isinstance(config.runs, str) else config.runs)
    described = [run_metrics(run) for run in runs]
    metric, why = automatic_metric(described) if config.by == AUTO else (config.by, "")
    if config.mode != "auto":
        mode = config.mode
    elif metric == CONSENSUS:  # an agreement: higher is better
        mode = "max"
    else:
        try:
            mode = direction_in_runs(metric, described)
        except ConfigError:
            for path in runs:  # a metric the runs never logged is the first thing to say
                metric_curve(path, metric)
            raise
    scores = consensus_scores(runs) if metric == CONSENSUS else score_runs(runs, metric, mode)
    best = select_run(scores, mode)
    settings = differing_settings(runs)
    print(table(scores, settings, best, metric))
    how = f"{mode}, auto: {why}" if why else mode
    print(f"\nSelected by {metric} ({how}): {best.run}, epoch {best.epoch}, {metric} = {best.value:.4f}")
    if best.collapse():
        print(f"Its target predictions collapsed onto {best.collapse()}: a sign of negative transfer.")
    if config.by == AUTO and metric == METHODS_METRIC:
        shapes = "On a target whose classes are shapes (digits, characters),"
        print(f"{shapes} --by {SHAPES_METHODS_METRIC} compares methods.")
    if best.checkpoint is None:
        print(f"No checkpoint of that epoch was kept; fit with --checkpoint.monitor {metric} to keep it.")
    else:
        print(f"Checkpoint: {best.checkpoint}")
    if config.out:
        payload = {
            "metric": metric,
            "mode": mode,
            "runs": [
                {
                    "run": str(s.run),
                    "value": s.value,
                    "epoch": s.epoch,
                    "checkpoint": str(s.checkpoint),
                    **s.diagnostics,
                    **swept,
                }
                for s, swept in zip(scores, settings)
            ],
            "selected": str(best.run),
        }
        Path(config.out).write_text(json.dumps(payload, indent=2, default=str))
    return best


def main(args: Sequence[str]) -> None:
    """``tlkit select`` with user errors as one line (``TLKIT_TRACEBACK=1`` for the traceback)."""
    run_reporting("select", run, args)


if __name__ == "__main__":
    main(sys.argv[1:])
