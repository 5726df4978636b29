"""Classification heads placed on top of a backbone's pooled features."""

from __future__ import annotations

from typing import Literal

from torch import nn

from tlkit.errors import config_error

HeadKind = Literal["linear", "mlp"]


def make_head(
    kind: HeadKind, in_features: int, num_classes: int, hidden_dim: int = 512, dropout: float = 0.0
) -> nn.Module:
    """A linear head, or an MLP (Linear-BN-ReLU-Dropout-Linear) for features that need a non-linear readout."""
    if kind == "linear":
        return (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
            if dropout
            else nn.Linear(in_features, num_classes)
        )
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )
    raise config_error("head", "'linear' or 'mlp'", kind)
