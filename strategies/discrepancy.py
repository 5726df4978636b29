"""Statistic-matching domain adaptation: `DAN` (multi-kernel MMD) and `DeepCORAL` (covariance alignment)."""

from __future__ import annotations

from tlkit.functional import coral_loss, mmd_loss
from tlkit.strategies.domain_adaptation import DomainAdaptation


class DAN(DomainAdaptation):
    """Deep adaptation network (Long et al., 2015): minimise the multi-kernel MMD between source and target features
    (Gaussian kernels at 0.5x-8x the pooled mean squared distance).

    Takes `DomainAdaptation`'s arguments.
    """

    def adaptation_loss(self, source_features, target_features, source_logits, target_logits):
        return mmd_loss(source_features, target_features)


class DeepCORAL(DomainAdaptation):
    """Deep CORAL (Sun & Saenko, 2016): align the second-order statistics (covariances) of source and target
    features.

    Takes `DomainAdaptation`'s arguments.
    """

    def adaptation_loss(self, source_features, target_features, source_logits, target_logits):
        return coral_loss(source_features, target_features)
