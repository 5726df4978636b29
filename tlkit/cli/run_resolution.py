"""What a command line asks for, read before LightningCLI parses it: the run's name, the checkpoint it starts from
(``--ckpt_path last`` resolved to the newest run of the config), and that checkpoint's own config when the user gives
none, so ``--ckpt_path`` alone rebuilds the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlkit.checkpoint import CheckpointInfo, read_checkpoint
from tlkit.cli.run_folders import version_number
from tlkit.errors import ConfigError, config_error

LOG_DIR = "logs"
DEFAULT_RUN_NAME = "tlkit"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def option_values(args: Sequence[str], *names: str) -> list[str]:
    """Every value given for the options ``names`` (``--name value`` or ``--name=value``)."""
    values = []
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                values.append(args[i + 1])
            elif arg.startswith(name + "="):
                values.append(arg.split("=", 1)[1])
    return values


@dataclass
class Invocation:
    """What the command line asks for, read before parsing: the run's name and the checkpoint it starts from."""

    args: list[str]
    subcommand: str | None = None
    run_name: str = DEFAULT_RUN_NAME
    ckpt_path: Path | None = None
    resume_version: int | None = None  # ``--ckpt_path last``: continue in this version folder
    #: What tlkit saved beside the weights (None in a plain Lightning checkpoint) and the model's hyperparameters.
    checkpoint_info: CheckpointInfo | None = field(default=None, repr=False)
    checkpoint_hparams: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, args: Sequence[str]) -> Invocation:
        args = _redirect_class_help(list(args))
        subcommand = next((a for a in args if a in SUBCOMMANDS), None)
        configs = option_values(args, "--config", "-c")
        invocation = cls(args, subcommand, Path(configs[-1]).stem if configs else DEFAULT_RUN_NAME)
        given = option_values(args, "--ckpt_path")
        if subcommand and given and given[-1] not in ("null", "None", ""):
            invocation._resolve_checkpoint(given[-1])
        return invocation

    def _resolve_checkpoint(self, given: str) -> None:
        if given == "last":
            self.ckpt_path, self.resume_version = self._latest_run()
            if self.subcommand != "fit":
                self.resume_version = None
        elif given == "best":
            if self.subcommand == "fit":
                raise config_error("--ckpt_path", "a checkpoint file or 'last' when fitting", given)
            return  # Lightning's own: the best checkpoint of the run just fitted (Python use)
        else:
            path = Path(given).expanduser()
            if not path.is_file():
                problem = "a folder" if path.is_dir() else "no such file"
                raise config_error("--ckpt_path", "a checkpoint file or 'last'", f"{given} ({problem})")
            self.ckpt_path = path
        self._point_args_at(self.ckpt_path)
        self._read_checkpoint()

    def _point_args_at(self, path: Path) -> None:
        """Replace the given ``--ckpt_path`` value (e.g. ``last``) by the resolved file."""
        for i, arg in enumerate(self.args):
            if arg == "--ckpt_path" and i + 1 < len(self.args):
                self.args[i + 1] = str(path)
            elif arg.startswith("--ckpt_path="):
                self.args[i] = f"--ckpt_path={path}"

    def _latest_run(self) -> tuple[Path, int]:
        runs = Path(LOG_DIR) / self.run_name
        candidates = sorted(runs.glob("version_*/checkpoints/last.ckpt"), key=lambda p: version_number(p.parents[1]))
        if not candidates:
            raise ConfigError(
                f"Expected `--ckpt_path last` to find a run to continue, but got no {runs}/version_*/checkpoints/"
                "last.ckpt. Start the run without --ckpt_path, or give a checkpoint file."
            )
        latest = candidates[-1]
        return latest, version_number(latest.parents[1])

    def _read_checkpoint(self) -> None:
        """Keep what the checks after parsing need; without a config or ``--model`` of the user's, the checkpoint's
        own run config describes the run.

        With one, the user's config is the run's (the checkpoint is checked against it after parsing); mixing the
        two would keep parts of the old run (callbacks, say) that the user's config does not mention.
        """
        checkpoint = read_checkpoint(self.ckpt_path, "--ckpt_path")
        self.checkpoint_info = checkpoint.info
        self.checkpoint_hparams = checkpoint.hyper_parameters
        text = checkpoint.run_config
        if not text or option_values(self.args, "--config", "-c", "--model"):
            return
        config = yaml.safe_load(text)
        for key in ("ckpt_path", "config", "print_config"):
            config.pop(key, None)
        if self.subcommand == "predict":  # predictions go to files beside the checkpoint, no log folder
            config.setdefault("trainer", {})["logger"] = False
        logger = (config.get("trainer") or {}).get("logger")
        if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
            logger["init_args"]["version"] = self.resume_version
            self.run_name = logger["init_args"].get("name") or self.run_name
        # jsonargparse's --config takes the YAML itself as well as a file: the checkpoint's config goes in first, so
        # every option given after it still wins, and there is no file to write or to leave behind.
        at = self.args.index(self.subcommand) + 1
        self.args[at:at] = ["--config", yaml.safe_dump(config)]


def _redirect_class_help(args: list[str]) -> list[str]:
    """``--model FineTuning --help`` shows FineTuning's arguments (LightningCLI's ``--model.help FineTuning``)."""
    if not ({"--help", "-h"} & set(args)):
        return args
    for key in ("--model", "--data"):
        chosen = option_values(args, key)
        if chosen:
            return [a for a in args if a not in ("--help", "-h")] + [f"{key}.help", chosen[-1]]
    return args


def run_folder_of(checkpoint: Path | None) -> Path | None:
    """The run folder (``<save_dir>/<name>/version_<n>``) a checkpoint in its ``checkpoints/`` folder belongs to."""
    if checkpoint is None or checkpoint.parent.name != "checkpoints":
        return None
    run = checkpoint.resolve().parent.parent
    return run if version_number(run) >= 0 else None
