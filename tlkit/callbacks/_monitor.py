"""Fail at the first validation, not after an epoch, when a callback monitors a metric nobody logs."""

from __future__ import annotations

import lightning.pytorch as pl

from tlkit.errors import ConfigError


def check_monitor_is_logged(trainer: pl.Trainer, monitor: str, owner: str) -> None:
    """Raise naming ``monitor`` and the logged metrics if validation has ended without logging it.

    During the sanity check only validation metrics exist yet, so only a ``val``-named monitor is checked there; a
    training metric is checked at the end of the first real validation, by which time an epoch has been logged.
    """
    if monitor in trainer.callback_metrics:
        return
    if trainer.sanity_checking and not monitor.startswith("val"):
        return
    logged = sorted(name for name in trainer.callback_metrics if name not in ("epoch", "step"))
    raise ConfigError(
        f"Expected {owner} `monitor` to be a logged metric, but got {monitor!r}. Logged: {', '.join(logged) or 'none'}."
    )
