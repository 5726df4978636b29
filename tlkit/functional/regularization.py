"""Penalties that keep a fine-tuned model near what made its pretrained weights useful (L2-SP, BSS)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def l2_sp_distance(parameters: Iterable[torch.Tensor], starting_point: Iterable[torch.Tensor]) -> torch.Tensor:
    """L2-SP's pull toward the starting point (Li et al., ICML 2018): ``1/2 * sum ||w - w0||^2``.

    Its gradient with respect to each ``w`` is ``w - w0``.
    """
    terms = [(w - w0).pow(2).sum() for w, w0 in zip(parameters, starting_point, strict=True)]
    return 0.5 * torch.stack(terms).sum() if terms else torch.zeros(())


def l2_penalty(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """Plain L2 (``1/2 * sum ||w||^2``): L2-SP's term on the new layers, which have no starting point to keep."""
    terms = [w.pow(2).sum() for w in parameters]
    return 0.5 * torch.stack(terms).sum() if terms else torch.zeros(())


def batch_spectral_shrinkage(features: torch.Tensor, k: int = 1) -> torch.Tensor:
    """BSS (Chen et al., NeurIPS 2019): the sum of the ``k`` smallest squared singular values of a batch's (N, D)
    feature matrix.

    Fine-tuning on little data amplifies the feature directions with small singular values, which carry what does not
    transfer; penalizing them shrinks those directions. ``k`` is capped at ``min(N, D)``.
    """
    if features.ndim != 2:
        raise ValueError(f"Expected features of shape (N, D), but got shape {tuple(features.shape)}.")
    # SVD in float32 at least: half precision has no SVD kernel and too little range for squared values.
    singular_values = torch.linalg.svdvals(features.float())  # descending
    k = min(k, singular_values.numel())
    return singular_values[singular_values.numel() - k :].pow(2).sum()
