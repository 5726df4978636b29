"""Prediction entropy and minimum class confusion (MCC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def entropy(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` per row; ``reduction`` is ``mean`` or ``none``."""
    log_p = F.log_softmax(logits, dim=1)
    h = -(log_p.exp() * log_p).sum(dim=1)
    return h.mean() if reduction == "mean" else h


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum class confusion (Jin et al., 2020) of a target batch.

    Probabilities at ``temperature`` are weighted by ``1 + exp(-entropy)`` (confident rows count more), the class
    confusion matrix ``P^T W P`` is row-normalised, and the loss is the mass off its diagonal, averaged per class.
    """
    n, c = logits.shape
    probabilities = F.softmax(logits / temperature, dim=1)
    h = -(probabilities * torch.log(probabilities + 1e-5)).sum(dim=1).detach()
    weights = 1.0 + torch.exp(-h)
    weights = (n * weights / weights.sum()).unsqueeze(1)
    confusion = (probabilities * weights).T @ probabilities
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    return (confusion.sum() - torch.trace(confusion)) / c
