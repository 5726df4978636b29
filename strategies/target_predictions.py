"""A domain-adaptation run keeps the target validation predictions of its best ``val/safe_im`` epoch in its run folder,
for ``tlkit select --by consensus``: that selector compares runs (methods, hyperparameters) by how much their target
predictions agree with the mean prediction of them all, which needs each run's probabilities, not its logged scalars.

One file a run (`TARGET_PREDICTIONS`; read by `tlkit.engines.run_selection.consensus_scores`), rewritten only when
an epoch beats the epoch it holds: 2,048 rows at most (the validators' ``max_samples``) x classes in float16, 40 KB
for 10 classes, 4 MB for 1,000.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

#: The file in the run folder, and the metric whose best epoch's predictions it holds.
TARGET_PREDICTIONS = "target_predictions.pt"
CONSENSUS_MONITOR = "val/safe_im"


class TargetPredictionKeeper(Callback):
    """Writes ``<run folder>/target_predictions.pt`` after a validation whose ``val/safe_im`` is the run's best yet:
    ``{"epoch", "value", "probabilities"}``, the probabilities of the target validation images the validators scored
    (every rank's, in rank order).

    A callback's ``on_validation_end`` runs on every rank after Lightning has computed the epoch's metrics and before
    it resets them: the gather below, and ``trainer.log_dir``, are collectives every rank enters in the same place.
    """

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        value = trainer.callback_metrics.get(CONSENSUS_MONITOR)
        metric = pl_module.target_diagnostics["top_class_share"]
        if trainer.sanity_checking or trainer.logger is None or value is None or not metric.update_called:
            return
        with metric.sync_context(should_sync=True, should_unsync=True):
            probabilities = metric.kept(metric.probabilities)
        log_dir = trainer.log_dir  # a broadcast from rank 0: asked on every rank
        if log_dir is None or not trainer.is_global_zero:  # None: a logger with no folder (fast_dev_run's)
            return
        path = Path(log_dir) / TARGET_PREDICTIONS
        # Strictly better only: the first epoch of a tie is kept, as the selection's max picks it, and a resumed run
        # that validates an epoch again leaves that epoch's file as it was.
        if path.is_file() and torch.load(path, weights_only=True)["value"] >= float(value):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".pt.partial")  # a kill mid-write leaves the previous file whole
        kept = {"epoch": trainer.current_epoch, "value": float(value), "probabilities": probabilities.cpu().half()}
        torch.save(kept, partial)
        os.replace(partial, path)
