"""One exception type and one message template for everything a user can get wrong."""

from __future__ import annotations

import difflib
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

    Example:
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
