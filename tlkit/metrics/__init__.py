"""Stateful metrics over `tlkit.functional`: torchmetrics classes, so DDP synchronisation comes for free."""

from tlkit.metrics.validators import (
    BatchNuclearNorm,
    InformationMaximization,
    MarginalEntropy,
    PredictedClasses,
    SafeInformationMaximization,
    SoftNeighborhoodDensity,
    TargetValidator,
    TopClassShare,
)

__all__ = [
    "BatchNuclearNorm",
    "InformationMaximization",
    "MarginalEntropy",
    "PredictedClasses",
    "SafeInformationMaximization",
    "SoftNeighborhoodDensity",
    "TargetValidator",
    "TopClassShare",
]
