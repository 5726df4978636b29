"""Scores that rank models on unlabelled target data (higher is better for all three)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def im_score(probabilities: torch.Tensor) -> torch.Tensor:
    """Information maximisation: entropy of the mean prediction minus the mean entropy of predictions.

    High when predictions are individually confident and collectively diverse across classes.
    """
    eps = 1e-12
    mean = probabilities.mean(dim=0)
    marginal_entropy = -(mean * torch.log(mean + eps)).sum()
    conditional_entropy = -(probabilities * torch.log(probabilities + eps)).sum(dim=1).mean()
    return marginal_entropy - conditional_entropy


def snd_score(probabilities: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Soft neighbourhood density (Saito et al., 2021): mean entropy of each sample's softmax-weighted similarity to
    the others, on L2-normalised predictions. High when target samples form dense neighbourhoods.

    A single sample has no neighbours: its score is 0 (the softmax over an empty row would be NaN).
    """
    if probabilities.shape[0] < 2:
        return probabilities.new_zeros(())
    x = F.normalize(probabilities, dim=1)
    similarity = x @ x.T
    n = similarity.shape[0]
    similarity = similarity.masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), float("-inf"))
    neighbours = F.softmax(similarity / temperature, dim=1)
    return -(neighbours * torch.log(neighbours + 1e-12)).sum(dim=1).mean()


def bnm_score(probabilities: torch.Tensor) -> torch.Tensor:
    """Batch nuclear-norm (Cui et al., 2020): nuclear norm of the prediction matrix divided by the number of rows.

    High when predictions are both confident and diverse.
    """
    return torch.linalg.matrix_norm(probabilities, ord="nuc") / probabilities.shape[0]
