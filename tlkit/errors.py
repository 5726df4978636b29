"""One exception type and one message template for everything a user can get wrong."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """Bad user input: a config value, a file, a data folder. Raised before training starts where possible."""


def closest(value: str, options: Iterable[str], n: int = 5) -> list[str]:
    """The valid options closest to a misspelt ``value``, best first."""
    options = list(options)
    matches = difflib.get_close_matches(value, options, n=n, cutoff=0.5)
    if not matches:
        # Fall back to substring matches so that e.g. "efficientnet" still suggests the efficientnet family.
        matches = [o for o in options if value.lower() in o.lower()][:n]
    return matches


def config_error(
    arg: str,
    expected: str,
    got: Any,
    where: str | None = None,
    options: Iterable[str] | None = None,
) -> ConfigError:
    """Build the house error: "Expected `<arg>` to be <expected>, but got <got>" plus where and the valid options.

    Examples:
        >>> raise config_error("backbone", "a timm or torchvision model name", "resnet5", options=["resnet50"])
    """
    message = f"Expected `{arg}` to be {expected}, but got {got!r}"
    if where:
        message += f" (in {where})"
    if options is not None:
        options = list(options)
        if options:
            message += f". Valid: {', '.join(map(str, options))}"
    return ConfigError(message + ".")


def import_optional(module: str, purpose: str, extra: str) -> Any:
    """The package ``module``, or a one-line ConfigError saying what needs it (``purpose``: "for shards", "to read
    DICOM files") and which tlkit extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"Expected the package {module} {purpose}, but it is not installed: pip install 'tlkit[{extra}]'."
        ) from None


def concrete_classes(package: str) -> list[str]:
    """Public class names of ``package`` (``tlkit.strategies``, ``tlkit.datamodules``) a user can choose directly:
    classes marked ``base_class_only = True`` in their own body are left out."""
    import importlib

    module = importlib.import_module(package)
    names = [name for name in getattr(module, "__all__", []) if isinstance(getattr(module, name), type)]
    return [name for name in names if not vars(getattr(module, name)).get("base_class_only", False)]


def refuse_base_class(instance: Any, option: str, package: str) -> None:
    """Raise when a class marked ``base_class_only`` is used as it is instead of through a subclass."""
    cls = type(instance)
    if vars(cls).get("base_class_only", False):
        raise config_error(
            option,
            "a class usable on its own",
            f"the base class {cls.__name__}",
            options=concrete_classes(package),
        )


#: The exit status of a tlkit command that stopped at a user error (reported in one line); other failures exit with 1.
USER_ERROR_STATUS = 2
#: What separates the program's name from the message in that line (``tlkit fit: error: Expected ...``).
ERROR_PREFIX = ": error: "


def reported_error(stderr: str) -> str | None:
    """The one-line message a tlkit command reported on ``stderr`` before exiting with `USER_ERROR_STATUS`, or None."""
    lines = [line for line in stderr.splitlines() if line.startswith("tlkit") and ERROR_PREFIX in line]
    return lines[-1].split(ERROR_PREFIX, 1)[1] if lines else None
