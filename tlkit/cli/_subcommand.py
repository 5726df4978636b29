"""What tlkit's own subcommands (``tlkit rank``, ``tlkit export``) share with the LightningCLI ones: jsonargparse
parsing with ``--config``/``--print_config``, and user errors reported in one line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from tlkit.cli.messages import config_error_in, option_names, report, summarize_parser_error, wants_traceback


class SubcommandParser(ArgumentParser):
    """A jsonargparse parser for ``tlkit <subcommand>`` whose errors name the bad option or value in one line.

    Keeps ArgumentParser's signature: jsonargparse builds nested parsers of the same class. Options are accepted by
    their full names only, as in `tlkit fit`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if wants_traceback() or not self.exit_on_error:
            return super().error(message, ex)
        report(self.prog.removeprefix("tlkit ") or None, summarize_parser_error(message, option_names(self), None))


def subcommand_parser(subcommand: str, description: str) -> SubcommandParser:
    """The parser of ``tlkit <subcommand>``, with ``--config`` (and so ``--print_config``)."""
    parser = SubcommandParser(prog=f"tlkit {subcommand}", description=description)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file with any of the options below.")
    return parser


def run_reporting(subcommand: str, run: Callable[[Sequence[str]], Any], args: Sequence[str]) -> None:
    """``run(args)``, with a tlkit user error printed as one line (``TLKIT_TRACEBACK=1`` for the traceback)."""
    try:
        run(args)
    except Exception as err:
        problem = config_error_in(err)
        if problem is None or wants_traceback():
            raise
        report(subcommand, str(problem))
