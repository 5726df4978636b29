"""`MCC`: minimum class confusion on the target's predictions."""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.functional import mcc_loss
from tlkit.strategies.domain_adaptation import DomainAdaptation
from tlkit.strategies.heads import HeadKind


class MCC(DomainAdaptation):
    """Minimum class confusion (Jin et al., 2020): reduce how much the target predictions confuse pairs of classes,
    weighting confident target examples up. Needs no domain discriminator.

    Args:
        temperature: softmax temperature of the confusion estimate (2.5 in the paper).

    The other arguments are `DomainAdaptation`'s.
    """

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        weights: str | None = "imagenet",
        num_classes: int | None = None,
        trade_off: float = 1.0,
        temperature: float = 2.5,
        backbone_lr_factor: float = 0.1,
        head: HeadKind = "linear",
        head_hidden_dim: int = 512,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
    ) -> None:
        if temperature <= 0:
            raise config_error("temperature", "a number > 0", temperature)
        self.temperature = temperature
        super().__init__(
            backbone=backbone,
            weights=weights,
            num_classes=num_classes,
            trade_off=trade_off,
            backbone_lr_factor=backbone_lr_factor,
            head=head,
            head_hidden_dim=head_hidden_dim,
            dropout=dropout,
            label_smoothing=label_smoothing,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            scheduler_interval=scheduler_interval,
        )

    def adaptation_loss(self, source_features, target_features, source_logits, target_logits):
        return mcc_loss(target_logits, self.temperature)
