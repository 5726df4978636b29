"""``tlkit <command>``: the console script's entry point, its command list, and dispatch.

Lightning's four subcommands (fit, validate, test, predict) go to `TLKitCLI`; the others (rank, export, serve,
select, tune, shards) to their own modules. A user error ends in one line (exit status 2), SIGTERM in status 143 and a
line saying how to continue.

``tlkit`` and ``tlkit --help`` answer from this module alone, before Lightning and torch are imported (seconds on a
small CPU): everything else is imported once a command is chosen.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Sequence

#: Every subcommand, one line each for ``tlkit --help``.
COMMANDS = {
    "fit": "train a model (a strategy, a backbone, a datamodule); logs and checkpoints under logs/<config>/",
    "validate": "score a checkpoint on the validation split",
    "test": "score a checkpoint on the test split; results beside its run (<run>/test_<n>/)",
    "predict": "label new images or texts with a checkpoint (--data.predict_dir); CSV and JSONL beside it",
    "rank": "score candidate backbones (or one backbone's layers) on your data before training any",
    "export": "write a checkpoint as ONNX and/or TorchScript with its preprocessing, verified on real images",
    "serve": "answer predictions over HTTP (LitServe) from a checkpoint or an export folder, with batching",
    "select": "choose among finished runs by a logged metric (label-free validators for domain adaptation)",
    "tune": "search hyperparameters of a run config with Optuna, one study shared by every worker",
    "shards": "write a datamodule's splits as LitData shards, streamed back by ShardsDataModule from disk or cloud",
}
#: The commands that are not Lightning's, each a module of this package with its own `main(args)`.
TOOL_MODULES = {
    "rank": "tlkit.cli.rank",
    "export": "tlkit.cli.export",
    "serve": "tlkit.cli.serve",
    "select": "tlkit.cli.select",
    "tune": "tlkit.cli.tune",
    "shards": "tlkit.cli.shards",
}


def top_level_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {line}" for name, line in COMMANDS.items()]
    return (
        "usage: tlkit <command> [options]   (tlkit <command> --help lists a command's options)\n\n"
        "Transfer learning on PyTorch Lightning.\n\ncommands:\n" + "\n".join(lines) + "\n\n"
        "example: tlkit fit --config configs/digits_finetune.yaml\n"
    )


def main(args: Sequence[str] | None = None) -> None:
    """Console-script entry point: user errors print one line (``TLKIT_TRACEBACK=1`` for the traceback)."""
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(top_level_help())
        sys.exit(0 if args else 2)
    if args[0] in TOOL_MODULES:
        return importlib.import_module(TOOL_MODULES[args[0]]).main(args[1:])
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from tlkit.cli.lightning_cli import TLKitCLI
    from tlkit.cli.messages import config_error_in, report, wants_traceback
    from tlkit.cli.run_folders import is_launched_rank
    from tlkit.cli.run_resolution import SUBCOMMANDS

    subcommand = next((a for a in args if a in SUBCOMMANDS), None)
    try:
        TLKitCLI(args=args)
    except SIGTERMException:
        # GracefulStop stops every rank at the same step; Lightning ends the run with a SystemExit of status 0, but
        # a stopped run is no success, and its user wants to know how to go on.
        if not is_launched_rank():
            how = " with --ckpt_path last" if subcommand == "fit" else ""
            sys.stderr.write(f"tlkit {subcommand}: stopped by SIGTERM; continue from the newest checkpoint{how}.\n")
        sys.exit(128 + signal.SIGTERM)
    except Exception as err:
        problem = config_error_in(err)
        if problem is None or wants_traceback():
            raise
        report(subcommand, str(problem))
