"""`WiSEFT`: at the end of fit, interpolate the fine-tuned weights toward the reference ones (Wortsman et al. 2022)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from typing_extensions import override

from tlkit.data_request import Features
from tlkit.errors import ConfigError, config_error
from tlkit.functional.weight_interpolation import DEFAULT_ALPHAS, InterpolationCurve, select_alpha
from tlkit.protocols import CalibratedModel, DomainValidation, HasTask, LayerGroupTrainer
from tlkit.tasks import Classification


class WiSEFT(Callback):
    """WiSE-FT: mix the fine-tuned weights with the reference ones, the mix chosen on the task's validation metric
    (accuracy for classification, mean average precision for multi-label, mean absolute error for regression).

    The reference is the model as it is when its backbone first trains: the pretrained backbone at the start of a
    plain fine-tune, or the end of `ProgressiveUnfreezing`'s head-only phase (LP-FT). After a linear probe the whole
    model is interpolated, as in the paper; in a plain fine-tune the new head's reference is its random
    initialisation, so only the backbone is, and the head keeps its fine-tuned weights.

    BatchNorm running statistics are interpolated with the weights (not recomputed): the coefficients 0 and 1 are then
    exactly the two models, and no pass over the training data (with its augmentation) is needed.

    At the end of fit every coefficient in ``alphas`` is evaluated on the validation loader (all of it, across ranks),
    the best is kept (ties go to the smaller coefficient, nearer the reference), the curve is logged as
    ``wise_ft/val_acc`` (``wise_ft/val_map``, ``wise_ft/val_mae``: the task's metric) over ``100 * alpha`` and the
    model is saved as ``filename`` in the run's checkpoint folder. The model in memory ends with the chosen weights,
    so a ``trainer.test`` that follows tests it.

    Args:
        alphas: coefficients to evaluate, 0 (reference) to 1 (fine-tuned); one value fixes it without validation
            (0.5 is the paper's choice when validation cannot see the shift).
        filename: the checkpoint written with the chosen weights.

    Examples:
        >>> trainer = Trainer(callbacks=[ProgressiveUnfreezing(milestones={5: "all"}), WiSEFT()])  # WiSE-FT on LP-FT
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, filename: str = "wise_ft.ckpt") -> None:
        alphas = [float(a) for a in alphas]
        if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
            raise config_error("alphas", "one or more coefficients in [0, 1]", alphas)
        if not filename.endswith(".ckpt") or "/" in filename:
            raise config_error("filename", "a file name ending in .ckpt", filename)
        self.alphas = sorted(set(alphas))
        self.filename = filename
        self.reference: dict[str, torch.Tensor] | None = None
        #: ``model`` (after a linear probe) or ``backbone`` (the head had not trained): what is interpolated.
        self.scope: str | None = None
        self.curve: InterpolationCurve | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, LayerGroupTrainer) or not pl_module.trains_backbone:
            raise ConfigError(
                f"Expected a model whose backbone trains for WiSEFT, but got {type(pl_module).__name__} (nothing to "
                "interpolate). Use FineTuning."
            )
        if isinstance(trainer.datamodule, DomainValidation):
            raise ConfigError(
                f"Expected a classification datamodule for WiSEFT (it selects on validation accuracy), but got "
                f"{type(trainer.datamodule).__name__}, which validates per domain."
            )

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        if self.reference is not None or not pl_module.backbone.trainable_group_names:
            return
        # Taken after every epoch-start hook, so after ProgressiveUnfreezing's phase change.
        self.reference = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
        self.scope = "model" if trainer.global_step > 0 else "backbone"

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.reference is None:
            rank_zero_info("WiSEFT: the backbone never trained in this run; nothing to interpolate.")
            return
        keys = None if self.scope == "model" else [k for k in self.reference if k.startswith("backbone.")]
        if len(self.alphas) == 1:
            self.curve = select_alpha(pl_module, self.reference, lambda _: 0.0, self.alphas, keys)
        else:
            loader = trainer.val_dataloaders
            if not isinstance(loader, DataLoader):
                raise ConfigError(
                    f"Expected one validation loader for WiSEFT to choose among alphas {self.alphas}, but got "
                    f"{type(loader).__name__}; give the datamodule a validation split, or a single `alphas` value."
                )
            # As many batches as the validation loop runs (`limit_val_batches`, `fast_dev_run`).
            limit = trainer.num_val_batches[0] if trainer.num_val_batches else float("inf")
            batches = len(loader) if limit == float("inf") else int(limit)
            if batches == 0:
                raise ConfigError(
                    f"Expected validation batches for WiSEFT to choose among alphas {self.alphas}, but "
                    "`limit_val_batches` runs none; allow some, or give a single `alphas` value."
                )

            monitor, mode = _selection_metric(pl_module)
            sign = 1.0 if mode == "max" else -1.0  # select_alpha maximises

            def evaluate(model: pl.LightningModule) -> float:
                return sign * _validation_score(trainer, model, itertools.islice(loader, batches))

            self.curve = select_alpha(pl_module, self.reference, evaluate, self.alphas, keys)
            name = f"wise_ft/{monitor.replace('/', '_')}"
            for logger in trainer.loggers:
                for alpha, score in zip(self.curve.alphas, self.curve.scores):
                    logger.log_metrics({name: sign * score}, step=round(100 * alpha))
            table = ", ".join(f"{a:g}: {sign * s:.4f}" for a, s in zip(self.curve.alphas, self.curve.scores))
            rank_zero_info(f"WiSEFT: validation {monitor} by alpha ({self.scope} interpolated): {table}")
        rank_zero_info(f"WiSEFT: kept alpha = {self.curve.best_alpha:g}")
        checkpoints = trainer.checkpoint_callback
        if checkpoints is not None and checkpoints.dirpath is not None:
            path = Path(checkpoints.dirpath) / self.filename
            trainer.save_checkpoint(path)
            rank_zero_info(f"WiSEFT: saved the interpolated model as {path}")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "scope": self.scope}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reference, self.scope = state_dict["reference"], state_dict["scope"]


def _selection_metric(model: pl.LightningModule) -> tuple[str, str]:
    """The (metric, mode) the mix is chosen on: the model's task's, validation accuracy for a model without one."""
    return model.task.monitor if isinstance(model, HasTask) else ("val/acc", "max")


def _validation_score(trainer: pl.Trainer, model: pl.LightningModule, loader: Iterable[Any]) -> float:
    """The task's selection metric over ``loader``, over every rank's shard of the validation set; top-1 accuracy
    for a classifier (or a model without a task)."""
    task = model.task if isinstance(model, HasTask) else None
    if task is None or isinstance(task, Classification):
        return _accuracy(trainer, model, loader)
    was_training = model.training
    model.eval()
    metric = task.metric_for_selection().to(model.device)
    temperature = model.calibration_temperature if isinstance(model, CalibratedModel) else torch.ones(())
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        for batch in loader:
            x, y = trainer.strategy.batch_to_device(batch)
            if isinstance(x, Features):
                raise ConfigError("Expected images in the validation batches for WiSEFT, but got cached features.")
            metric.update(*task.metric_inputs(model(x).float(), y, temperature))
    model.train(was_training)
    return float(metric.compute())  # synchronised across ranks by torchmetrics


def _accuracy(trainer: pl.Trainer, model: pl.LightningModule, loader: Iterable[Any]) -> float:
    """Top-1 accuracy over ``loader``, summed over ranks (each rank holds its shard of the validation set)."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(2, device=model.device)
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        for batch in loader:
            x, y = trainer.strategy.batch_to_device(batch)
            if isinstance(x, Features):
                raise ConfigError("Expected images in the validation batches for WiSEFT, but got cached features.")
            counts += torch.stack([(model(x).argmax(dim=-1) == y).sum(), torch.tensor(len(y), device=y.device)])
    model.train(was_training)
    correct, total = trainer.strategy.reduce(counts, reduce_op="sum").tolist()
    return correct / max(total, 1.0)
