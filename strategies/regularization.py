"""Regularizers for `FineTuning` on little data: L2-SP and BSS (configuration and the frozen starting point)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from tlkit.errors import config_error
from tlkit.functional import l2_sp_distance


@dataclass(frozen=True)
class L2SP:
    """L2-SP (Li et al., ICML 2018): pull the backbone toward its pretrained weights instead of toward zero.

    Adds ``alpha/2 * ||w - w_start||^2`` over the backbone's trainable weights and ``beta/2 * ||w||^2`` over the new
    head's, logged as ``train/l2_sp``. It replaces weight decay: with L2-SP on, every param group's ``weight_decay``
    is 0 (decay toward zero would pull the backbone away from its starting point).

    Args:
        alpha: weight of the pull toward the starting backbone weights.
        beta: weight of plain L2 on the head.

    Examples:
        >>> from tlkit.strategies import FineTuning
        >>> model = FineTuning("test_resnet", weights=None, num_classes=3, l2_sp=L2SP(alpha=0.1))
    """

    alpha: float = 0.01
    beta: float = 0.01

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise config_error("l2_sp.alpha", "a number >= 0", self.alpha)
        if self.beta < 0:
            raise config_error("l2_sp.beta", "a number >= 0", self.beta)


@dataclass(frozen=True)
class BSS:
    """Batch Spectral Shrinkage (Chen et al., NeurIPS 2019): shrink the smallest singular values of each training
    batch's backbone features, the directions fine-tuning on little data inflates with what does not transfer.

    Adds ``weight * sum of the k smallest squared singular values``, logged as ``train/bss``.

    Args:
        weight: the penalty's weight (the paper's eta).
        k: how many of the smallest singular values to shrink.
    """

    weight: float = 0.001
    k: int = 1

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise config_error("bss.weight", "a number >= 0", self.weight)
        if self.k < 1:
            raise config_error("bss.k", "an integer >= 1", self.k)


class StartingPoint(nn.Module):
    """A frozen copy of named parameters, held as buffers: saved in checkpoints, so a resumed run (or one from random
    weights) pulls toward exactly the point the run started from, and moved to the model's device with it."""

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]]) -> None:
        super().__init__()
        self.names: list[str] = []
        for name, parameter in named_parameters:
            self.register_buffer(name.replace(".", "__"), parameter.detach().clone())
            self.names.append(name)

    def distance(self, named_parameters: Iterable[tuple[str, torch.Tensor]]) -> torch.Tensor:
        """``1/2 * sum ||w - w_start||^2`` over ``named_parameters`` (each must be one the copy was made of)."""
        pairs = [(w, self.get_buffer(name.replace(".", "__"))) for name, w in named_parameters]
        return l2_sp_distance([w for w, _ in pairs], [w0 for _, w0 in pairs])
