"""What a run's metrics mean, asked of its strategy and task: which metric its checkpoints select on, and which way
each logged metric is better. ``tlkit select`` and ``tlkit tune`` read it from a run's config; neither guesses a
direction from a metric's name.

Examples:
    >>> metrics = run_metrics_of_config({"model": {"class_path": "tlkit.strategies.FineTuning",
    ...     "init_args": {"task": {"class_path": "tlkit.tasks.Regression"}}}})
    >>> metrics.monitor, metrics.direction("val/rmse")
    (('val/mae', 'min'), 'min')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tlkit.callbacks.resumable_checkpoint import monitor_direction
from tlkit.checkpoint import import_class
from tlkit.errors import ConfigError
from tlkit.tasks import Classification, Mode, Task

#: The checkpoint metric of the `tlkit` command's defaults (``--checkpoint.monitor``): standing for "the strategy's
#: own" (`effective_monitor`), since the parser's default cannot know the model.
DEFAULT_MONITOR = "val/acc"
#: The module strategies' short names resolve in (``model: FineTuning``), as LightningCLI resolves them.
STRATEGIES_MODULE = "tlkit.strategies"


@dataclass(frozen=True)
class RunMetrics:
    """A run's checkpoint metric and the better direction of each metric it logs.

    Attributes:
        strategy: the strategy's class name (``FineTuning``, ``MCC``).
        monitor: (metric, mode) the run's checkpoints selected on.
        directions: each logged metric with a better direction, by its logged name.
    """

    strategy: str
    monitor: tuple[str, Mode]
    directions: dict[str, Mode]

    def direction(self, metric: str) -> Mode | None:
        return self.directions.get(metric)


def effective_monitor(
    configured: str | None,
    configured_mode: str | None,
    strategy_default: tuple[str, Mode],
    directions: dict[str, Mode],
) -> tuple[str, Mode]:
    """The metric a run's checkpoints select on, and its mode: the strategy's own where the config keeps the
    command's default (`DEFAULT_MONITOR`), else the user's ``--checkpoint.monitor`` with its ``mode`` (``auto``:
    the direction ``directions`` give it, as `ResumableCheckpoint` asks the model)."""
    if configured is None or configured == DEFAULT_MONITOR:
        return strategy_default
    if configured_mode in ("min", "max"):
        return configured, configured_mode
    return configured, monitor_direction(configured, directions)


def strategy_class(class_path: str) -> type:
    """The strategy class a config's ``model.class_path`` names (a full path or a short name)."""
    from tlkit.strategies import TransferModule

    cls = import_class(class_path if "." in class_path else f"{STRATEGIES_MODULE}.{class_path}")
    if not (isinstance(cls, type) and issubclass(cls, TransferModule)):
        raise ConfigError(
            f"Expected `model.class_path` to name a tlkit strategy that imports here, but got {class_path!r}."
        )
    return cls


def run_metrics_of_config(config: dict[str, Any]) -> RunMetrics:
    """`RunMetrics` of a run config as ``config.yaml`` holds it (nested dicts)."""
    model = config.get("model") or {}
    if isinstance(model, str):
        model = {"class_path": model}
    class_path = model.get("class_path")
    if not class_path:
        raise ConfigError("Expected the run config to name its strategy (`model.class_path`), but it names none.")
    cls = strategy_class(str(class_path))
    task_config = (model.get("init_args") or {}).get("task")
    task = Task.from_config(task_config) if task_config else Classification()
    checkpoint = config.get("checkpoint") or {}
    directions = cls.metric_directions(task)
    monitor = effective_monitor(
        checkpoint.get("monitor"), checkpoint.get("mode"), cls.default_monitor(task), directions
    )
    return RunMetrics(cls.__name__, monitor, directions)


def run_metrics(run: Path) -> RunMetrics:
    """`RunMetrics` of a run folder (``logs/<name>/version_<n>``), from its ``config.yaml``."""
    path = run / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"Expected {path} (the config every `tlkit fit` run writes), but it is missing.")
    return run_metrics_of_config(yaml.safe_load(path.read_text()) or {})
