"""`ResumableCheckpoint`: ModelCheckpoint whose ``last.ckpt`` is always the latest save, written atomically."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor
from typing_extensions import override

from tlkit.callbacks._lightning_internals import check_lightning_version, validation_follows_this_batch
from tlkit.callbacks._monitor import check_monitor_is_logged
from tlkit.errors import ConfigError, config_error
from tlkit.protocols import KnowsMetricDirections


def monitor_direction(monitor: str, directions: dict[str, str]) -> str:
    """The direction ``directions`` (a model's, `KnowsMetricDirections`) give a checkpoint ``monitor`` whose mode is
    ``auto``; a monitor they give none is one line naming the validation metrics that have one."""
    mode = directions.get(monitor)
    if mode is None:
        known = ", ".join(sorted(name for name in directions if name.startswith("val/")))
        raise ConfigError(
            f"Expected `checkpoint.monitor` to be a metric the model logs ({known}), or `checkpoint.mode` min or max "
            f"for one of your own, but got {monitor!r}."
        )
    return mode


class ResumableCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for resuming: ``last.ckpt`` follows every save point, and no file is ever half-written.

    Since Lightning 2.6, ``save_last=True`` refreshes ``last.ckpt`` only when a top-k checkpoint is saved at the same
    step, so with a monitored metric and ``save_top_k=1`` it usually holds the best epoch, not the latest, and
    resuming from it silently repeats epochs. Here every save point (each epoch, and every ``every_n_train_steps``
    when configured) refreshes ``last.ckpt`` whether or not the metric improved.

    A step save (``every_n_train_steps``) that falls on an epoch's last batch waits for the validation that follows,
    so the checkpoint of that step holds what the model fits on validation (a temperature, decision thresholds)
    whether the run validated before it or was resumed and has not (Lightning would otherwise save a straight run
    before that validation and a resumed one, which has no monitored value yet, after it). A resumed run's step
    saves before its first validation refresh ``last.ckpt`` (Lightning would skip them for want of the metric).

    Each checkpoint is written to a temporary file in the same folder and renamed over the target, so a run killed
    while saving (SIGKILL, out of memory) leaves the previous checkpoint intact instead of a truncated one.

    Takes ModelCheckpoint's arguments; the `tlkit` command uses it as ``--checkpoint.*``. ``mode: auto`` (the
    command's default) asks the model which way ``monitor`` is better (its task's metrics know), at setup.

    Args:
        mode: ``min``, ``max``, or ``auto``: the direction the model gives ``monitor``.

    Examples:
        >>> trainer = Trainer(callbacks=[ResumableCheckpoint(monitor="val/mae", mode="auto", save_last=True)])
    """

    def __init__(self, *args: Any, mode: Literal["min", "max", "auto"] = "min", **kwargs: Any) -> None:
        check_lightning_version()  # the three private methods overridden below
        if mode not in ("min", "max", "auto"):
            raise config_error("checkpoint.mode", "'min', 'max' or 'auto'", mode)
        #: Whether the direction is still to be asked of the model (`resolve_mode`).
        self.mode_is_auto = mode == "auto"
        super().__init__(*args, mode="max" if self.mode_is_auto else mode, **kwargs)
        self._last_written_at: tuple[int, int] | None = None
        #: A step save that waits for the validation right after its batch.
        self._save_after_validation = False

    def use_monitor(self, monitor: str, mode: str) -> None:
        """Select on another metric before training starts (the `tlkit` command's per-strategy default), resetting
        what ModelCheckpoint derived from the old one; ``/`` in the name becomes ``_`` in file names."""
        if mode not in ("min", "max"):
            raise config_error("checkpoint.mode", "'min' or 'max'", mode)
        self.monitor = monitor
        self.use_mode(mode)
        self.filename = f"epoch{{epoch:03d}}-{monitor.replace('/', '_')}{{{monitor}:.4f}}"

    def resolve_mode(self, model: pl.LightningModule) -> None:
        """For ``mode: auto``: the direction ``model`` gives ``monitor``; a metric it gives none is one line."""
        if not self.mode_is_auto or self.monitor is None:
            return
        directions = model.logged_metric_directions() if isinstance(model, KnowsMetricDirections) else {}
        self.use_mode(monitor_direction(self.monitor, directions))

    def use_mode(self, mode: str) -> None:
        """Select in ``mode`` (``min`` or ``max``) from now on, keeping the monitor and the file names."""
        self.mode, self.mode_is_auto = mode, False
        # The "worst so far" sentinel ModelCheckpoint compares against, set from the mode in its __init__.
        self.kth_value = torch.tensor(torch.inf if mode == "min" else -torch.inf)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.resolve_mode(pl_module)
        super().setup(trainer, pl_module, stage)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning would only complain at the first save, an epoch later; the sanity check already knows.
        if self.monitor is not None:
            check_monitor_is_logged(trainer, self.monitor, "checkpoint")
        super().on_validation_end(trainer, pl_module)
        if self._save_after_validation and not trainer.sanity_checking:
            self._save_after_validation = False
            if not self._should_skip_saving_checkpoint(trainer):
                self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))  # and last.ckpt

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        steps = self._every_n_train_steps
        step_save = steps >= 1 and trainer.global_step % steps == 0 and not self._should_skip_saving_checkpoint(trainer)
        if step_save and validation_follows_this_batch(trainer):
            self._save_after_validation = True  # with what that validation fits (see the class's docstring)
            return
        if step_save and self.monitor is not None and self.monitor not in trainer.callback_metrics:
            # A resumed run has no monitored value until it validates; Lightning would save nothing until then, so
            # a second kill would lose every step since the resume. last.ckpt needs no metric.
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        # Every save point refreshes last.ckpt, improved or not (Lightning skips it when no top-k file was written).
        self._save_last_checkpoint(trainer, monitor_candidates)

    @override
    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        position = (trainer.current_epoch, trainer.global_step)
        if self._last_written_at == position:  # Lightning asks again after a top-k save at the same step
            return
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_at = position

    @override
    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        target = Path(filepath)
        partial = partial_path(target)
        super()._save_checkpoint(trainer, str(partial))
        if trainer.is_global_zero:
            os.replace(partial, target)  # atomic on POSIX and Windows within one folder
        trainer.strategy.barrier("ResumableCheckpoint")
        self._last_checkpoint_saved = filepath


def partial_path(target: Path) -> Path:
    """The temporary file ``target`` is written to first: hidden, and named after the host and process writing it,
    so that one left by a killed run can be told from one being written (`remove_abandoned_partials`)."""
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.partial")


def remove_abandoned_partials(root: Path) -> list[Path]:
    """Delete the half-written checkpoints under ``root`` whose writer, on this host, is no longer running (a run
    killed while saving: SIGKILL, out of memory); returns them. Files of other hosts and of live processes stay."""
    removed = []
    host = socket.gethostname()
    for path in root.glob("**/checkpoints/.*.partial") if root.is_dir() else []:
        writer, _, pid = path.name.removesuffix(".partial").rpartition(".")
        if writer.endswith(f".{host}") and pid.isdigit() and not _is_running(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
