"""`LearningRates`: each param group's learning rate in TensorBoard, for the groups that train."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch import Callback
from typing_extensions import override


class LearningRates(Callback):
    """Logs ``lr-<Optimizer>/<group name>`` for every param group with a trainable parameter, every
    ``log_every_n_steps`` steps (rank 0).

    A frozen group logs nothing until it unfreezes: its learning rate follows the schedule all the same, and
    Lightning's LearningRateMonitor draws that full curve for a group that never trained. With progressive unfreezing
    each group's curve starts at its unfreeze. Set ``frozen: true`` to log every group (frozen ones under
    ``lr-<Optimizer>/frozen/<group name>``, so the two are never mistaken for each other).

    Args:
        frozen: also log the groups that do not train, under ``frozen/``.

    Examples:
        >>> trainer = Trainer(callbacks=[LearningRates()])
    """

    def __init__(self, frozen: bool = False) -> None:
        self.frozen = frozen

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if trainer.logger is None or not trainer.is_global_zero or trainer.global_step % trainer.log_every_n_steps:
            return
        stats = {}
        for optimizer in trainer.optimizers:
            prefix = f"lr-{type(optimizer).__name__}"
            for index, group in enumerate(optimizer.param_groups):
                name = group.get("name", f"pg{index + 1}")
                if any(p.requires_grad for p in group["params"]):
                    stats[f"{prefix}/{name}"] = group["lr"]
                elif self.frozen:
                    stats[f"{prefix}/frozen/{name}"] = group["lr"]
        if stats:
            trainer.logger.log_metrics(stats, step=trainer.global_step)
