"""The ``tlkit`` command line, a layer above everything else (nothing below imports it).

- `entry`: the console script (``tlkit = tlkit.cli:main``), its command list and dispatch;
- `lightning_cli`: `TLKitCLI`, LightningCLI with tlkit's defaults, hooks and checks (fit, validate, test, predict);
- `run_resolution`: what a command line asks for before parsing (``--ckpt_path last``, a checkpoint's own config);
- `run_folders`: run folders reserved atomically;
- `messages`: every error as one line naming the option, file or value;
- `rank`, `export`, `select`: one module per tool command, sharing `_subcommand`'s parser; `demo`: ``make demo``.

The names below are imported on first use: a process that needs only `run_folders` (a run-folder reservation, a
launched rank's check) does not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Where each public name of the package lives.
_PUBLIC = {
    "COMMANDS": "tlkit.cli.entry",
    "main": "tlkit.cli.entry",
    "top_level_help": "tlkit.cli.entry",
    "TLKitCLI": "tlkit.cli.lightning_cli",
    "LOG_DIR": "tlkit.cli.run_resolution",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tlkit.cli' has no attribute {name!r}")
    return vars(importlib.import_module(_PUBLIC[name]))[name]
