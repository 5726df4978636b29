"""`DomainAdaptation`: the base of the strategies that add an adaptation loss to the source cross-entropy."""

from __future__ import annotations

from typing import Any

import torch

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.strategies.domain_module import DomainModule


class DomainAdaptation(DomainModule):
    """A `DomainModule` that adapts to the target domain with a loss of its own.

    Each training step runs the source and target batches through the backbone together and adds the strategy's
    `adaptation_loss` on the features and logits, weighted by ``trade_off``, to the source cross-entropy. Strategies
    override `adaptation_loss` (and, where they need more, `training_step`).

    Args:
        trade_off: weight of the adaptation loss.

    The other arguments are `DomainModule`'s.
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True

    def __init__(self, backbone: str | Backbone = "tf_efficientnet_lite0", *, trade_off: float = 1.0, **kwargs) -> None:
        if trade_off < 0:
            raise config_error("trade_off", "a number >= 0", trade_off)
        self.trade_off = trade_off
        super().__init__(backbone, **kwargs)

    def adaptation_weight(self) -> float:
        """The adaptation loss's weight at this step (``trade_off``; override for a schedule)."""
        return self.trade_off

    def adaptation_loss(
        self,
        source_features: torch.Tensor,
        target_features: torch.Tensor,
        source_logits: torch.Tensor,
        target_logits: torch.Tensor,
    ) -> torch.Tensor | None:
        """The strategy's loss on one source and one target batch; None for no adaptation."""
        return None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        xs, ys = batch["source"]
        xt = batch["target"]
        n = len(xs)
        features = self.extract_features(torch.cat([xs, xt]))
        logits = self.head(features)
        cls_loss = self.loss(logits[:n], ys)
        weight = self.adaptation_weight()
        adaptation = self.adaptation_loss(features[:n], features[n:], logits[:n], logits[n:])
        loss = cls_loss if adaptation is None else cls_loss + weight * adaptation
        if self.uses_target_labels:
            loss = loss + self.labelled_target_loss(batch["target_labeled"])
        self.log_training(loss, cls_loss, adaptation, weight, logits[:n], ys)
        return loss
