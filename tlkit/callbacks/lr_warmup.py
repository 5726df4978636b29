"""`LRWarmup`: gradual learning-rate warm-up on top of any scheduler, restarted for each newly unfrozen group."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from tlkit.errors import config_error


class LRWarmup(Callback):
    """Ramp each param group's learning rate from ``start_factor`` to 1, multiplying whatever the scheduler set.

    A group's warm-up starts at the first optimizer step in which it has a trainable parameter: step 0 for the head
    and the groups trainable from the start, the step of its unfreeze for a group that `ProgressiveUnfreezing`
    unfreezes later, while the other groups keep their schedule. The factor is applied only for the duration of the
    optimizer step (torch optimizer step hooks) and then undone, so the LR scheduler never sees it: chainable
    schedulers such as CosineAnnealingLR, which compute the next LR from the current one, are not disturbed, and
    discriminative LRs compose as ``decayed lr x scheduler factor x warm-up factor``.

    Progress is derived from ``trainer.global_step`` and the recorded start step of each group, both restored from
    checkpoints, so a resumed run warms up exactly as the uninterrupted one.

    Args:
        duration: length of the warm-up, in ``unit``s.
        unit: ``steps`` (optimizer steps) or ``epochs``.
        shape: ``linear`` or ``cosine`` ramp.
        start_factor: the factor at the first step, in (0, 1].

    Examples:
        >>> trainer = Trainer(callbacks=[LRWarmup(duration=2, unit="epochs", shape="cosine")])
    """

    def __init__(
        self,
        duration: int = 100,
        unit: Literal["steps", "epochs"] = "steps",
        shape: Literal["linear", "cosine"] = "linear",
        start_factor: float = 0.01,
    ) -> None:
        if duration < 1:
            raise config_error("duration", "an integer >= 1", duration)
        if unit not in ("steps", "epochs"):
            raise config_error("unit", "'steps' or 'epochs'", unit)
        if shape not in ("linear", "cosine"):
            raise config_error("shape", "'linear' or 'cosine'", shape)
        if not 0.0 < start_factor <= 1.0:
            raise config_error("start_factor", "in (0, 1]", start_factor)
        self.duration, self.unit, self.shape, self.start_factor = duration, unit, shape, start_factor
        self.started_at: dict[str, int] = {}  # group name -> global step of its first trainable step
        self._trainer: pl.Trainer | None = None
        self._handles: list[Any] = []
        self._saved_lrs: list[float] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(duration=self.duration, unit=self.unit, shape=self.shape)

    def factor(self, steps_since_start: int, duration_steps: int) -> float:
        """Warm-up factor after ``steps_since_start`` of ``duration_steps`` (1 once the warm-up is over)."""
        progress = min(1.0, steps_since_start / duration_steps)
        if self.shape == "cosine":
            progress = 0.5 * (1.0 - math.cos(math.pi * progress))
        return self.start_factor + (1.0 - self.start_factor) * progress

    def duration_steps(self, trainer: pl.Trainer) -> int:
        if self.unit == "steps":
            return self.duration
        steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        return max(1, self.duration * steps_per_epoch)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        for optimizer in trainer.optimizers:
            self._handles.append(optimizer.register_step_pre_hook(self._before_step))
            self._handles.append(optimizer.register_step_post_hook(self._after_step))

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.teardown(trainer, pl_module, "fit")

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        trainer = self._trainer
        step = trainer.global_step
        duration = self.duration_steps(trainer)
        self._saved_lrs = [group["lr"] for group in optimizer.param_groups]
        effective = {}
        for index, group in enumerate(optimizer.param_groups):
            name = group.get("name", f"group{index}")
            if name not in self.started_at:
                if not any(p.requires_grad for p in group["params"]):
                    continue  # frozen: its warm-up starts when it is unfrozen
                self.started_at[name] = step
            group["lr"] = group["lr"] * self.factor(step - self.started_at[name], duration)
            effective[f"lr-effective/{name}"] = group["lr"]
        if trainer.logger is not None and effective and step % max(1, trainer.log_every_n_steps) == 0:
            trainer.logger.log_metrics(effective, step=step)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group, lr in zip(optimizer.param_groups, self._saved_lrs):
            group["lr"] = lr

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"started_at": dict(self.started_at)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.started_at = {str(k): int(v) for k, v in state_dict["started_at"].items()}
