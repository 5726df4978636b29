"""Stateful metrics over `tlkit.functional`: torchmetrics classes, so DDP synchronisation comes for free."""

from tlkit.metrics.validators import (
    BatchNuclearNorm,
    ClassClusterAgreement,
    ImageClusterAgreement,
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
    "ClassClusterAgreement",
    "ImageClusterAgreement",
    "InformationMaximization",
    "MarginalEntropy",
    "PredictedClasses",
    "SafeInformationMaximization",
    "SoftNeighborhoodDensity",
    "TargetValidator",
    "TopClassShare",
]
