"""Label-free validators as torchmetrics Metrics: rank checkpoints on unlabelled target predictions.

Each collects class probabilities over an epoch (``update``), concatenated across ranks by torchmetrics at
``compute``, and scores them with its pure function from `tlkit.functional` (higher is better for all three). They
work outside tlkit too: any model's softmax outputs on target data.

Examples:
    >>> validator = InformationMaximization()
    >>> validator.update(logits.softmax(dim=1))
    >>> score = validator.compute()
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from tlkit.errors import config_error
from tlkit.functional import bnm_score, im_score, snd_score


class TargetValidator(Metric):
    """Base: keeps every probability row it is given (all ranks at ``compute``), scores the first ``max_samples``.

    Args:
        max_samples: rows scored at most (SND's pairwise similarities grow with its square).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    score: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, max_samples: int = 2048, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_samples < 1:
            raise config_error("max_samples", "an integer >= 1", max_samples)
        self.max_samples = max_samples
        self.add_state("probabilities", default=[], dist_reduce_fx="cat")

    def update(self, probabilities: torch.Tensor) -> None:
        """Add a batch of class probabilities, shape (N, classes), rows summing to 1."""
        if probabilities.ndim != 2:
            raise ValueError(f"Expected probabilities of shape (N, classes), but got {tuple(probabilities.shape)}.")
        self.probabilities.append(probabilities.detach().float())

    def compute(self) -> torch.Tensor:
        probabilities = dim_zero_cat(self.probabilities)[: self.max_samples]
        return type(self).score(probabilities)


class InformationMaximization(TargetValidator):
    """IM: entropy of the mean prediction minus the mean entropy (confident and diverse predictions score high)."""

    score = staticmethod(im_score)


class SoftNeighborhoodDensity(TargetValidator):
    """SND (Saito et al., 2021): how densely target predictions cluster with their soft neighbours."""

    score = staticmethod(snd_score)


class BatchNuclearNorm(TargetValidator):
    """BNM (Cui et al., 2020): nuclear norm of the prediction matrix per row."""

    score = staticmethod(bnm_score)
