"""Feature-distribution alignment losses: multi-kernel MMD (DAN) and CORAL (Deep CORAL)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def gaussian_kernels(x: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, multipliers: Sequence[float]):
    """Sum over bandwidth multipliers ``m`` of the Gaussian kernels ``exp(-|x_i - y_j|^2 / (m * sigma2))``."""
    distances = torch.cdist(x, y).pow(2)
    return sum(torch.exp(-distances / (m * sigma2)) for m in multipliers)


def mmd_loss(source: torch.Tensor, target: torch.Tensor, multipliers: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0)):
    """Biased estimate of the squared multi-kernel MMD between two feature batches (Long et al., 2015).

    The base bandwidth ``sigma2`` is the mean squared distance over the pooled batch (DAN's heuristic), detached so
    the bandwidth is not itself optimised.
    """
    pooled = torch.cat([source, target])
    sigma2 = torch.cdist(pooled, pooled).pow(2).mean().detach().clamp_min(1e-12)
    xx = gaussian_kernels(source, source, sigma2, multipliers).mean()
    yy = gaussian_kernels(target, target, sigma2, multipliers).mean()
    xy = gaussian_kernels(source, target, sigma2, multipliers).mean()
    return xx + yy - 2.0 * xy


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance of the feature covariances, divided by ``4 d^2`` (Sun & Saenko, 2016)."""
    d = source.shape[1]

    def covariance(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=0, keepdim=True)
        return centred.T @ centred / (x.shape[0] - 1)

    return (covariance(source) - covariance(target)).pow(2).sum() / (4.0 * d * d)
