"""`SelfTraining`: confidence-thresholded pseudo-labels with weak/strong augmentation (FixMatch-style)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.functional import align_distribution
from tlkit.strategies.domain_adaptation import DomainAdaptation


class SelfTraining(DomainAdaptation):
    """Self-training baseline (Sohn et al., 2020, applied to the target domain): the prediction on a weakly augmented
    target image, where its confidence reaches ``threshold``, becomes the label for a strongly augmented view of the
    same image. The datamodule supplies both views.

    With ``distribution_alignment`` (ReMixMatch), the weak-view probabilities are divided by the running mean of
    the target predictions before thresholding: an unadapted model tends to predict a few classes for most target
    images, and without alignment the pseudo-labels reinforce that (confirmation bias).

    Args:
        threshold: minimum confidence for a pseudo-label to count.
        distribution_alignment: align pseudo-label probabilities to a uniform class distribution.
        alignment_momentum: momentum of the running mean of target predictions.

    The other arguments are `DomainAdaptation`'s (``trade_off`` weights the pseudo-label loss).
    """

    target_views = "weak_strong"

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        *,
        threshold: float = 0.9,
        distribution_alignment: bool = True,
        alignment_momentum: float = 0.9,
        **kwargs,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise config_error("threshold", "in (0, 1)", threshold)
        if not 0.0 <= alignment_momentum < 1.0:
            raise config_error("alignment_momentum", "in [0, 1)", alignment_momentum)
        self.threshold = threshold
        self.distribution_alignment = distribution_alignment
        self.alignment_momentum = alignment_momentum
        super().__init__(backbone, **kwargs)

    def build_adaptation_modules(self, num_classes: int) -> None:
        # A buffer, so it is in checkpoints (exact resume) and moves with the model.
        self.register_buffer("target_prediction_mean", torch.full((num_classes,), 1.0 / num_classes))

    def pseudo_label_probabilities(self, weak_logits: torch.Tensor) -> torch.Tensor:
        probabilities = F.softmax(weak_logits.detach().float(), dim=1)
        if not self.distribution_alignment:
            return probabilities
        # The same batch mean on every rank, so the running means stay identical under DDP.
        batch_mean = self.all_gather(probabilities.mean(dim=0)).reshape(-1, probabilities.shape[1]).mean(dim=0)
        self.target_prediction_mean.mul_(self.alignment_momentum).add_(batch_mean, alpha=1 - self.alignment_momentum)
        return align_distribution(probabilities, self.target_prediction_mean)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        xs, ys = batch["source"]
        weak, strong = batch["target"]
        n, m = len(xs), len(weak)
        logits = self(torch.cat([xs, weak, strong]))
        source_logits, weak_logits, strong_logits = logits[:n], logits[n : n + m], logits[n + m :]
        cls_loss = self.loss(source_logits, ys)
        confidence, pseudo_labels = self.pseudo_label_probabilities(weak_logits).max(dim=1)
        mask = (confidence >= self.threshold).float()
        pseudo_loss = (F.cross_entropy(strong_logits, pseudo_labels, reduction="none") * mask).mean()
        weight = self.adaptation_weight()
        loss = cls_loss + weight * pseudo_loss
        self.log_loss("train/pseudo_label_ratio", mask.mean(), m)
        self.log_training(loss, cls_loss, pseudo_loss, weight, source_logits, ys)
        return loss
