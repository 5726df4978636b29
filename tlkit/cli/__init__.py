"""The ``tlkit`` command line, a layer above everything else (nothing below imports it).

- `entry`: the console script (``tlkit = tlkit.cli:main``), its command list and dispatch;
- `lightning_cli`: `TLKitCLI`, LightningCLI with tlkit's defaults, hooks and checks (fit, validate, test, predict);
- `run_resolution`: what a command line asks for before parsing (``--ckpt_path last``, a checkpoint's own config);
- `messages`: every error as one line naming the option, file or value;
- `rank`, `export`, `select`: one module per tool command, sharing `_subcommand`'s parser.
"""

from tlkit.cli.entry import COMMANDS, main, top_level_help
from tlkit.cli.lightning_cli import TLKitCLI
from tlkit.cli.run_resolution import LOG_DIR

__all__ = ["COMMANDS", "LOG_DIR", "TLKitCLI", "main", "top_level_help"]
