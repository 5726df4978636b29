"""How far a model's predictions on a domain have collapsed onto a few classes (the usual sign of negative transfer
in domain adaptation): pure functions of class probabilities, shape (N, classes)."""

from __future__ import annotations

import torch

#: `predicted_classes` counts the fewest classes that take this share of the argmax predictions.
COVERED_SHARE = 0.9
#: Predictions have collapsed when they fill fewer than this share of the classes the unadapted reference's fill
#: (all the classes without a reference): the one threshold of the strategies' report, `tlkit select` and
#: ``val/safe_im``.
COLLAPSE_SHARE = 0.5


def class_counts(probabilities: torch.Tensor) -> torch.Tensor:
    """How many rows predict each class (argmax), shape (classes,)."""
    return torch.bincount(probabilities.argmax(dim=1), minlength=probabilities.shape[1])


def top_class_share(probabilities: torch.Tensor) -> torch.Tensor:
    """The share of rows whose predicted class is the most frequent one: 1/classes when balanced, 1 when collapsed."""
    return class_counts(probabilities).max().float() / max(1, probabilities.shape[0])


def predicted_classes(probabilities: torch.Tensor, share: float = COVERED_SHARE) -> torch.Tensor:
    """The fewest classes that together take ``share`` of the predictions ("collapsed onto 2 classes")."""
    counts = class_counts(probabilities).sort(descending=True).values.float()
    covered = counts.cumsum(dim=0) / counts.sum().clamp(min=1)
    return (covered < share - 1e-9).sum() + 1


def marginal_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """The entropy (nats) of the mean prediction: log(classes) when the predicted mass is spread evenly, 0 when
    every row predicts the same class."""
    mean = probabilities.mean(dim=0)
    return -(mean * torch.log(mean + 1e-12)).sum()


def collapsed(predicted: float, spread: float, share: float = COLLAPSE_SHARE) -> bool:
    """Whether predictions that fill ``predicted`` classes (`predicted_classes`) have collapsed, against the
    ``spread`` of classes the unadapted reference's predictions fill (the number of classes without a reference)."""
    return predicted < share * spread
