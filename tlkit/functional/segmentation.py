"""Losses of per-pixel classification."""

from __future__ import annotations

import torch


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """One minus the soft Dice coefficient (Milletari et al., 2016), averaged over the classes present in the batch's
    targets or predicted: (N, C, H, W) logits, (N, H, W) class indices; pixels at ``ignore_index`` count for
    nothing. It weighs every class by its overlap, not its pixel count, which cross-entropy alone lets a large
    background dominate."""
    valid = targets != ignore_index
    probabilities = logits.float().softmax(dim=1) * valid.unsqueeze(1)
    one_hot = torch.zeros_like(probabilities).scatter_(1, targets.where(valid, 0).unsqueeze(1), 1.0)
    one_hot = one_hot * valid.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    present = total > 0
    dice = (2 * intersection[present] + 1.0) / (total[present] + 1.0)
    return 1.0 - dice.mean()
