"""Prediction entropy, information maximisation (SHOT) and minimum class confusion (MCC)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def entropy(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` per row; ``reduction`` is ``mean`` or ``none``."""
    log_p = F.log_softmax(logits, dim=1)
    h = -(log_p.exp() * log_p).sum(dim=1)
    return h.mean() if reduction == "mean" else h


def information_maximization_loss(logits: torch.Tensor) -> torch.Tensor:
    """SHOT's information-maximisation loss: mean entropy of the predictions minus the entropy of their mean.

    Minimising it makes each prediction confident and the batch's predictions diverse across classes (the second
    term stops every sample collapsing onto one class). Equal to ``-im_score(softmax(logits))``.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    p = log_p.exp()
    conditional = -(p * log_p).sum(dim=1).mean()
    mean = p.mean(dim=0)
    marginal = -(mean * torch.log(mean + 1e-5)).sum()
    return conditional - marginal


def class_balance_loss(logits: torch.Tensor) -> torch.Tensor:
    """log K minus the entropy of the batch's mean prediction: 0 when the predictions spread evenly over the K
    classes, log K when they all fall on one (French et al., 2018, use it against self-training's collapse)."""
    mean = F.softmax(logits.float(), dim=1).mean(dim=0)
    return math.log(logits.shape[1]) + (mean * torch.log(mean + 1e-5)).sum()


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
