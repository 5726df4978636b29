"""Stateful metrics over `tlkit.functional`: torchmetrics classes, so DDP synchronisation comes for free."""

from tlkit.metrics.validators import (
    BatchNuclearNorm,
    InformationMaximization,
    SoftNeighborhoodDensity,
    TargetValidator,
)

__all__ = ["BatchNuclearNorm", "InformationMaximization", "SoftNeighborhoodDensity", "TargetValidator"]
