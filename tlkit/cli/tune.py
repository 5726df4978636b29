"""``tlkit tune``: search hyperparameters of a run config with Optuna; every trial an ordinary ``tlkit fit`` run.
Options after ``--`` go to every trial's ``tlkit fit`` (``-- --trainer.max_epochs 5``).

    tlkit tune --config configs/digits_finetune.yaml --space space.yaml --n_trials 20 --metric val/acc

Started on several machines (or several times on one) with the same ``--storage`` and ``--study_name``, the
workers share one study. Started again after a worker was killed, it continues the study.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from tlkit.cli._subcommand import SubcommandParser, run_reporting
from tlkit.engines.run_metrics import run_metrics_of_config
from tlkit.engines.tuning import TuneResult, flat_keys, markdown_table, tune


def build_parser() -> SubcommandParser:
    parser = SubcommandParser(prog="tlkit tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=str, required=True, help="The run config every trial starts from.")
    parser.add_argument("--space", type=str, required=True, help="YAML: config keys and their ranges or choices.")
    parser.add_argument(
        "--n_trials", type=int, default=20, help="Finished trials the study should have, all workers together."
    )
    parser.add_argument(
        "--metric",
        type=str,
        default="auto",
        help="The logged metric to optimise (its best over a trial's validations); auto: the config's checkpoint "
        "metric (the task's, such as val/acc or val/mae; val/safe_im for domain adaptation).",
    )
    parser.add_argument(
        "--storage",
        type=str | None,
        default=None,
        help="sqlite:///tune.db, a PostgreSQL or MySQL URL, or journal:<file>; default: tune/<study>/study.db.",
    )
    parser.add_argument("--study_name", type=str | None, default=None, help="The study; default: the config's name.")
    parser.add_argument(
        "--direction",
        type=str,
        default="auto",
        help="max, min, or auto (the direction the config's task or strategy gives the metric).",
    )
    parser.add_argument("--pruner", type=str, default="median", help="median, hyperband or none.")
    parser.add_argument(
        "--timeout", type=float | None, default=None, help="Stop starting trials after this many seconds."
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="The sampler's seed; each trial's values are drawn with a seed derived from it and the trial's number, "
        "so workers sharing a study never draw the same values.",
    )
    parser.add_argument("--sampler", type=str, default="tpe", help="tpe (Optuna's default) or random.")
    parser.add_argument(
        "--out_dir", type=str | None, default=None, help="Where the results go; default: tune/<study>/."
    )
    return parser


def resolved_run_config(config: str, extra: Sequence[str]) -> dict[str, Any]:
    """The whole run config ``tlkit fit --config <config> <extra>`` would run, defaults included."""
    from tlkit.cli.lightning_cli import TLKitCLI

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        TLKitCLI(args=["fit", "--config", config, *extra, "--print_config"])
    return yaml.safe_load(printed.getvalue()) or {}


def run(args: Sequence[str]) -> TuneResult:
    args = list(args)
    # Options after `--` go to every trial's `tlkit fit` (e.g. -- --trainer.max_epochs=5).
    extra = args[args.index("--") + 1 :] if "--" in args else []
    own = args[: args.index("--")] if "--" in args else args
    config = build_parser().parse_args(own)
    run_config = resolved_run_config(config.config, extra)
    result = tune(
        config.config,
        config.space,
        config.n_trials,
        config.metric,
        storage=config.storage,
        study_name=config.study_name,
        direction=config.direction,
        pruner=config.pruner,
        timeout=config.timeout,
        seed=config.seed,
        sampler=config.sampler,
        extra_args=extra,
        out_dir=config.out_dir,
        progress=lambda line: print(f"tlkit tune: {line}", file=sys.stderr, flush=True),
        config_keys=flat_keys(run_config),
        metrics=run_metrics_of_config(run_config),
    )
    metric = result.metric
    print(markdown_table(result, metric))
    if result.best is not None:
        best = result.best
        print(f"\nBest: trial {best.number}, {metric} = {best.value:.4f}; config: {result.out_dir / 'best.yaml'}")
    print(f"Results: {result.out_dir / 'trials.json'}")
    return result


def main(args: Sequence[str]) -> None:
    """``tlkit tune`` with user errors as one line (``TLKIT_TRACEBACK=1`` for the traceback)."""
    run_reporting("tune", run, args)


if __name__ == "__main__":
    main(sys.argv[1:])
