"""The heads a task puts on a backbone's pooled features (classes, labels, numbers), and the options that shape a
head: which of them apply is the task's to say (`tlkit.tasks.Task.head_options`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from torch import nn

from tlkit.errors import config_error

HeadKind = Literal["linear", "mlp"]


@dataclass(frozen=True)
class HeadOptions:
    """What the strategy's ``head``, ``head_hidden_dim`` and ``dropout`` arguments ask of the head.

    Attributes:
        head: ``linear``, or ``mlp`` (Linear-BN-ReLU-Dropout-Linear).
        head_hidden_dim: width of the MLP head's hidden layer.
        dropout: dropout before the head's last layer (a dense task's decoder: before its classifier).
    """

    head: HeadKind = "linear"
    head_hidden_dim: int = 512
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.head not in ("linear", "mlp"):
            raise config_error("head", "'linear' or 'mlp'", self.head)
        if self.head_hidden_dim < 1:
            raise config_error("head_hidden_dim", "an integer >= 1", self.head_hidden_dim)
        if not 0.0 <= self.dropout < 1.0:
            raise config_error("dropout", "in [0, 1)", self.dropout)

    def changed(self) -> dict[str, tuple[object, object]]:
        """The options set to something other than their defaults: (value, default) by name."""
        default = asdict(HeadOptions())
        return {name: (value, default[name]) for name, value in asdict(self).items() if value != default[name]}


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
