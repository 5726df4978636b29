"""`MCC`: minimum class confusion on the target's predictions."""

from __future__ import annotations

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.functional import mcc_loss
from tlkit.strategies.domain_adaptation import DomainAdaptation


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
        *,
        temperature: float = 2.5,
        **kwargs,
    ) -> None:
        if temperature <= 0:
            raise config_error("temperature", "a number > 0", temperature)
        self.temperature = temperature
        super().__init__(backbone, **kwargs)

    def adaptation_loss(self, source_features, target_features, source_logits, target_logits):
        return mcc_loss(target_logits, self.temperature)
