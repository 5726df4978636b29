"""Turn what can go wrong on the `tlkit` command line into at most two lines: the problem, and what would be valid.

jsonargparse reports a bad value in a subclass-mode argument as a nested list of every alternative it tried (80+
lines), and an exception raised while building the model or data as a traceback. Users need the one line that names
the value; the full report stays one environment variable away (``TLKIT_TRACEBACK=1``).
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
from collections.abc import Iterable

from tlkit.checkpoint import import_class
from tlkit.errors import ERROR_PREFIX, USER_ERROR_STATUS, ConfigError, closest, concrete_classes

#: The phrases of jsonargparse's error reports that `summarize_parser_error` reads. jsonargparse raises its problems
#: as text, with no structured error to read, so these are tlkit's one dependency on its wording; each is checked
#: against the real message by tests/test_jsonargparse_wording.py, which fails naming the phrase an upgrade rewords.
JSONARGPARSE_WORDING: dict[str, re.Pattern[str]] = {
    # A config file PyYAML could not read; its marks follow ("... in "<file>", line 5, column 4").
    "yaml_problem": re.compile(r"Problems parsing config: (.+)", re.S),
    # The key being parsed when a value was refused (`trainer.max_epochs`).
    "parser_key": re.compile(r'Parser key "([^"]+)"'),
    # The class whose arguments were being parsed (`--model.lr_decai`: FineTuning's).
    "class_path": re.compile(r"class_path '([^']+)'"),
    # An argument the class does not take.
    "not_accepted": re.compile(r"Option '([^']+)' is not accepted"),
    # An option no parser knows (argparse's own phrase).
    "unrecognized": re.compile(r"unrecognized arguments: (\S+)", re.IGNORECASE),
    # A value of the wrong type, with the type expected.
    "expected_type": re.compile(r"Expected an? (.+?)\. Got value: (.+)"),
    # A class name that is no importable class.
    "import_path": re.compile(r"dot import path string: (\S+)|Import path (\S+) does not"),
    # The value refused by a union or literal type, and the types tried.
    "given_value": re.compile(r"Given value: (.+)"),
    "subtypes": re.compile(r"Subtypes: \[(.+?)\]\s*$", re.M),
}

TRACEBACK_ENV = "TLKIT_TRACEBACK"
HINT = f"(set {TRACEBACK_ENV}=1 for the full report)"


def wants_traceback() -> bool:
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0", "false")


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    """Every option ``parser`` accepts, without dashes (``trainer.max_epochs``): what closest-name suggestions
    draw from.

    argparse keeps no public list of its options; this reads its private ``_option_string_actions`` (option string
    to action, unchanged since Python 3.2): tlkit's one use of argparse or jsonargparse internals.
    """
    return [option.lstrip("-") for option in parser._option_string_actions]


def _init_parameters(class_path: str) -> list[str]:
    """Constructor argument names of ``class_path``, following ``**kwargs`` forwarded to base classes."""
    cls = import_class(class_path)
    if cls is None:
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names += [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return list(dict.fromkeys(names))


def _suggest(value: str, options: Iterable[str]) -> str:
    matches = closest(value, options, n=3)
    return f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""


def _readable_type(text: str) -> str:
    """``<class 'float'>`` -> ``a float``; ``typing.Literal['a', 'b']`` -> ``one of 'a', 'b'``."""
    if match := re.fullmatch(r"<class '(\w+)'>", text):
        return f"{'an' if match.group(1)[0] in 'aeiou' else 'a'} {match.group(1)}"
    if match := re.fullmatch(r"typing\.Literal\[(.+)\]", text):
        return f"one of {match.group(1)}"
    return text


def _known_classes(top_key: str | None) -> list[str]:
    """Short names the CLI resolves for ``--model`` or ``--data``."""
    package = {"model": "tlkit.strategies", "data": "tlkit.datamodules"}.get(top_key or "")
    if package is None:
        return []
    return [name for name in concrete_classes(package) if name[0].isupper()]


def summarize_parser_error(message: str, option_strings: Iterable[str] = (), config: str | None = None) -> str:
    """The one line of a jsonargparse error report that names the bad value, with the closest valid choices.

    ``config`` names the config file being read, for YAML syntax errors (jsonargparse only gives line and column).
    """
    if match := JSONARGPARSE_WORDING["yaml_problem"].search(message):
        # PyYAML names the enclosing block first ("while parsing a block mapping in ..., line 2") and the problem
        # last ("did not find expected key in ..., line 5"): the last mark is the line to fix.
        marks = list(re.finditer(r"(?:^|\n)([^\n]*?)\s*\n?\s*in \"[^\"]*\", (line \d+, column \d+)", match.group(1)))
        if marks:
            problem = marks[-1].group(1).strip() or "a syntax error"
            return f"Expected {config or 'the config'} to be valid YAML, but {marks[-1].group(2)}: {problem}."
    lines = [line.strip().lstrip("- ").strip() for line in message.splitlines() if line.strip()]
    ours = next((line for line in lines if line.startswith("Expected `")), None)
    if ours:  # a tlkit ConfigError raised while checking a value
        return ours
    keys = JSONARGPARSE_WORDING["parser_key"].findall(message)
    owner = JSONARGPARSE_WORDING["class_path"].search(message)
    if match := JSONARGPARSE_WORDING["not_accepted"].search(message):
        options = _init_parameters(owner.group(1)) if owner else []
        where = f" of {owner.group(1).rsplit('.', 1)[-1]}" if owner else ""
        return f"Unknown argument {match.group(1)!r}{where}.{_suggest(match.group(1), options)}"
    if match := JSONARGPARSE_WORDING["unrecognized"].search(message):
        given = match.group(1).split("=", 1)[0]
        options = [o for o in option_strings if not o.endswith("+")]  # `--key+` appends to a list: not a name
        return f"Unknown option {given!r}.{_suggest(given.lstrip('-'), options)}"
    if match := JSONARGPARSE_WORDING["expected_type"].search(message):
        return (
            f"Expected `{'.'.join(keys)}` to be {_readable_type(match.group(1))}, but got {match.group(2).strip()!r}."
        )
    if match := JSONARGPARSE_WORDING["import_path"].search(message):
        given = match.group(1) or match.group(2)
        top = keys[0] if keys else None
        known = _known_classes(top)
        return f"Expected `--{top or 'class'}` to be a tlkit class name or an import path, but got {given!r}." + (
            _suggest(given, known) or (f" Valid: {', '.join(known)}." if known else "")
        )
    # A union that refused the value: the innermost key with one names it (`model.reference_epochs`, not `model`,
    # whose union of a class or null failed only because one of the class's arguments did).
    for depth, key in reversed(list(enumerate(JSONARGPARSE_WORDING["parser_key"].finditer(message)))):
        after = message[key.end() :]
        subtypes = JSONARGPARSE_WORDING["subtypes"].search(after)
        given = JSONARGPARSE_WORDING["given_value"].search(after)
        if subtypes and given:
            names = [
                _readable_type(t.strip())
                for t in re.findall(r"<class '[^']+'>|typing\.\w+\[[^\]]+\]", subtypes.group(1))
            ]
            expected = " or ".join("null" if n == "a NoneType" else n for n in names) or subtypes.group(1)
            return f"Expected `{'.'.join(keys[: depth + 1])}` to be {expected}, but got {given.group(1).strip()!r}."
    return lines[-1] if lines else message


#: The Trainer options that must fit the machine; Lightning refuses the others' bad values before they get here.
TRAINER_HARDWARE_KEYS = ("strategy", "accelerator", "precision", "devices", "num_nodes")


def available_accelerators() -> list[str]:
    """What ``trainer.accelerator`` can be on this machine."""
    import torch

    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found += ["cuda", "gpu"]
    if torch.backends.mps.is_available():
        found += ["mps", "gpu"]
    return found


def trainer_option_error(message: str, given: dict[str, object]) -> ConfigError:
    """Lightning's refusal to build a Trainer, as one line naming the option it is about (``given``: the values of
    `TRAINER_HARDWARE_KEYS` as configured) and Lightning's own first sentence."""
    text = " ".join(message.split())
    reason = re.split(r"(?<=[.!])\s", text, maxsplit=1)[0]
    lowered = text.lower()
    if "strategy" in lowered and given.get("strategy") not in (None, "auto"):
        key = "strategy"
        expected = f"a strategy the accelerator {given.get('accelerator') or 'auto'!r} can run (auto, ddp, ddp_spawn)"
    elif "precision" in lowered:
        key, expected = "precision", "a precision this accelerator supports (32-true, bf16-mixed on CPU)"
    elif given.get("accelerator") not in (None, "auto") and any(w in lowered for w in ("accelerator", "gpu", "cuda")):
        key, expected = "accelerator", f"one this machine has ({', '.join(available_accelerators())})"
    elif "devices" in lowered or "device" in lowered:
        key, expected = "devices", "a number of devices this machine has (or auto)"
    else:
        return ConfigError(f"Expected the trainer options to fit this machine, but Lightning says: {reason}")
    return ConfigError(f"Expected `trainer.{key}` to be {expected}, but got {given.get(key)!r}: {reason}")


def report(subcommand: str | None, line: str) -> None:
    """Print the two-line report and exit with `USER_ERROR_STATUS`."""
    prog = f"tlkit {subcommand}" if subcommand else "tlkit"
    sys.stderr.write(f"{prog}{ERROR_PREFIX}{line}\n{' ' * len(prog)}  {HINT}\n")
    sys.exit(USER_ERROR_STATUS)


def _from_worker(error: ConfigError) -> ConfigError:
    """A ConfigError as a DataLoader worker process raised it, without the worker's traceback torch wraps it in."""
    text = str(error)
    if "Original Traceback" not in text:
        return error
    marker = f"{ConfigError.__module__}.{ConfigError.__name__}: "
    last = text.rstrip().splitlines()[-1]
    return ConfigError(last.split(marker, 1)[-1])


def config_error_in(exception: BaseException) -> ConfigError | None:
    """The tlkit ConfigError that caused ``exception`` (it may be wrapped by jsonargparse or Lightning), if any."""
    seen = set()
    current: BaseException | None = exception
    while current is not None and id(current) not in seen:
        if isinstance(current, ConfigError):
            return _from_worker(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    text = str(exception)
    line = next(
        (ln.strip().lstrip("- ") for ln in text.splitlines() if ln.strip().lstrip("- ").startswith("Expected `")), None
    )
    return ConfigError(line) if line else None
