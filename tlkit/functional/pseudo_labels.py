"""Distribution alignment of pseudo-label probabilities (ReMixMatch)."""

from __future__ import annotations

import torch


def align_distribution(probabilities: torch.Tensor, running_mean: torch.Tensor) -> torch.Tensor:
    """Rescale each row of ``probabilities`` by ``uniform / running_mean`` and renormalise (Berthelot et al., 2020).

    ``running_mean`` is the model's recent average prediction on unlabelled data. Classes it predicts too often are
    scaled down, rare ones up, so pseudo-labels cannot collapse onto the few classes an unadapted model favours on
    the new domain. With a uniform ``running_mean`` the probabilities are unchanged.
    """
    aligned = probabilities / running_mean.clamp_min(1e-6)
    return aligned / aligned.sum(dim=1, keepdim=True)
