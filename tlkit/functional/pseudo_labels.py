"""Pseudo-labels: distribution alignment of their probabilities (ReMixMatch) and class-centroid labelling (SHOT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def align_distribution(probabilities: torch.Tensor, running_mean: torch.Tensor) -> torch.Tensor:
    """Rescale each row of ``probabilities`` by ``uniform / running_mean`` and renormalise (Berthelot et al., 2020).

    ``running_mean`` is the model's recent average prediction on unlabelled data. Classes it predicts too often are
    scaled down, rare ones up, so pseudo-labels cannot collapse onto the few classes an unadapted model favours on
    the new domain. With a uniform ``running_mean`` the probabilities are unchanged.
    """
    aligned = probabilities / running_mean.clamp_min(1e-6)
    return aligned / aligned.sum(dim=1, keepdim=True)


def centroid_pseudo_labels(features: torch.Tensor, probabilities: torch.Tensor, refinements: int = 1) -> torch.Tensor:
    """SHOT's self-supervised pseudo-labels (Liang et al., 2020): each sample takes the class of its nearest class
    centroid in feature space, a label that follows the target's own clusters rather than the source classifier.

    Features get a constant 1 appended and are L2-normalised, as in SHOT's code. The first centroids are the
    features' means weighted by the predicted ``probabilities``; each of the ``refinements`` rounds recomputes them
    from the current hard labels. Distances are cosine; classes the classifier predicts for no sample are not
    centroids (an empty class would otherwise attract samples through a centroid of noise).

    Args:
        features: (N, D) target features.
        probabilities: (N, K) the classifier's softmax outputs on the same samples.
        refinements: rounds of recomputing centroids from hard labels (SHOT: 1).

    Returns:
        (N,) class indices.
    """
    x = F.normalize(torch.cat([features.float(), features.new_ones(len(features), 1).float()], dim=1), dim=1)
    num_classes = probabilities.shape[1]
    present = torch.bincount(probabilities.argmax(dim=1), minlength=num_classes) > 0
    weights = probabilities.float()
    for _ in range(refinements + 1):
        centroids = F.normalize(weights.T @ x / (weights.sum(dim=0)[:, None] + 1e-8), dim=1)
        similarity = (x @ centroids.T).masked_fill(~present, float("-inf"))
        labels = similarity.argmax(dim=1)
        weights = F.one_hot(labels, num_classes).float()
    return labels
