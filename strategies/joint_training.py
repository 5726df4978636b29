"""`JointTraining`: supervised domain adaptation on labelled source and labelled target images."""

from __future__ import annotations

from typing import Any

import torch

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.functional import input_count, join_inputs
from tlkit.strategies.domain_module import DomainModule


class JointTraining(DomainModule):
    """Train on labelled source and labelled target images together: ``source_weight * CE(source) + CE(target)``.

    With ``target_labels: all`` and ``source_weight: 0`` it is the target oracle, the upper reference for the
    unsupervised methods.

    Args:
        source_weight: weight of the source cross-entropy (0 trains on the target alone).

    The other arguments are `DomainModule`'s.
    """

    uses_target_labels = True

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        *,
        source_weight: float = 1.0,
        **kwargs,
    ) -> None:
        if source_weight < 0:
            raise config_error("source_weight", "a number >= 0", source_weight)
        self.source_weight = source_weight
        super().__init__(backbone, **kwargs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        xs, ys = batch["source"]
        xl, yl = batch["target_labeled"]
        n = input_count(xs)
        logits = self(join_inputs(xs, xl))
        source_loss = self.loss(logits[:n], ys)
        target_loss = self.loss(logits[n:], yl)
        loss = self.source_weight * source_loss + target_loss
        self.log_loss("train/target_cls_loss", target_loss, len(yl))
        self.log_training(loss, source_loss, None, 0.0, logits[:n], ys)
        return loss
