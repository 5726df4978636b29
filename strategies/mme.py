"""`MME`: semi-supervised domain adaptation by minimax entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.functional import entropy, grad_reverse
from tlkit.strategies.domain_adaptation import DomainAdaptation


class CosineClassifier(nn.Module):
    """Logits = cosine(feature, class prototype) / temperature, as MME requires."""

    def __init__(self, in_features: int, num_classes: int, temperature: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, in_features) * 0.01)
        self.temperature = temperature

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T / self.temperature


class MME(DomainAdaptation):
    """Minimax entropy (Saito et al., 2019), for a target with a few labels per class (``target_labels: few``).

    A cosine classifier is trained on labelled source and target images; on unlabelled target images the classifier
    maximises the prediction entropy (moving the class prototypes towards the target) while the backbone minimises it
    (clustering target features around the prototypes), via gradient reversal.

    Args:
        temperature: the cosine classifier's temperature.

    The other arguments are `DomainAdaptation`'s (``trade_off`` is the entropy weight, 0.1 in the paper); the head is
    always the cosine classifier.
    """

    uses_target_labels = True

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        *,
        trade_off: float = 0.1,
        temperature: float = 0.05,
        **kwargs,
    ) -> None:
        if temperature <= 0:
            raise config_error("temperature", "a number > 0", temperature)
        # MME's classifier is its own cosine classifier on normalised features, not TransferModule's head.
        for name, default in (("head", "linear"), ("dropout", 0.0)):
            if kwargs.get(name, default) != default:
                raise config_error(name, f"{default!r} for MME (its classifier is a cosine classifier)", kwargs[name])
        self.temperature = temperature
        super().__init__(backbone, trade_off=trade_off, **kwargs)

    def make_head(self, num_classes: int) -> nn.Module:
        return CosineClassifier(self.backbone.num_features, num_classes, self.temperature)

    def adaptation_loss(self, source_features, target_features, source_logits, target_logits):
        # The classifier sees reversed gradients: minimising -H makes it maximise entropy, the backbone minimise it.
        # At full strength from the first step, as in the paper and its reference code (`trade_off` scales both
        # sides); a warm-up would let the classifier spread its prototypes while the backbone barely pushes back.
        reversed_logits = self.head(grad_reverse(target_features, 1.0))
        return -entropy(reversed_logits)
