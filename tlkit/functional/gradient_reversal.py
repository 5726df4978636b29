"""Gradient reversal (Ganin & Lempitsky, 2015) and its warm-start schedule."""

from __future__ import annotations

import math

import torch


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-coeff`` in the backward pass."""
    return _GradReverse.apply(x, coeff)


def warm_start_lambda(progress: float, gamma: float = 10.0, max_value: float = 1.0) -> float:
    """DANN's schedule ``max_value * (2 / (1 + exp(-gamma * p)) - 1)`` for training progress ``p`` in [0, 1].

    Starts at 0 so the domain loss cannot swamp the still-random classifier, and approaches ``max_value``.
    """
    progress = min(max(progress, 0.0), 1.0)
    return max_value * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)
