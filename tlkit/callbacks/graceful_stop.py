"""`GracefulStop`: SIGTERM ends a fit on every rank at one step, without a collective inside the signal handler."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override


class GracefulStop(Callback):
    """On SIGTERM, every rank of a fit raises Lightning's ``SIGTERMException`` after the same training or
    validation batch; the newest checkpoint stays the place to continue from.

    Lightning's own SIGTERM handler calls ``dist.broadcast`` inside the handler. A signal runs its handler between two
    Python bytecodes of the main thread, so that broadcast can start while the other ranks are in a different
    collective (a gradient all-reduce, a metric sync, a checkpoint barrier), and the run hangs. Its end-of-batch and
    end-of-epoch checks also read each rank's own flag, so ranks that got the signal stop while the others wait for
    them. Here the handler only sets a flag; after each batch every rank enters the same all-reduce (any rank's flag
    stops them all), so the stop happens at a point all ranks reach together. With one process it costs nothing.

    The handler replaces Lightning's once Lightning has installed it (at the sanity check or the start of training,
    whichever comes first); Lightning restores the previous handler when the run ends.

    Examples:
        >>> trainer = Trainer(devices=2, callbacks=[GracefulStop()])
    """

    def __init__(self) -> None:
        self._requested = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._requested = True

    def _install(self) -> None:
        # Signal handlers can only be set from the main thread (a notebook's worker thread cannot).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _stop_if_requested(self, trainer: pl.Trainer) -> None:
        if trainer.strategy.reduce_boolean_decision(self._requested, all=False):
            raise SIGTERMException()

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._requested = False

    @override
    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install()

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install()

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._stop_if_requested(trainer)

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # Only inside a fit: a standalone validate's ranks may see different batch counts, and it was never
        # given this handler.
        if trainer.state.fn == TrainerFn.FITTING:
            self._stop_if_requested(trainer)
