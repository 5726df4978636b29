"""Label-free validators as torchmetrics Metrics: rank checkpoints on unlabelled target predictions.

Each collects class probabilities over an epoch (``update``), concatenated across ranks by torchmetrics at
``compute``, and scores them with its pure function from `tlkit.functional` (higher is better for all of them).
They work outside tlkit too: any model's softmax outputs on target data (`ClassClusterAgreement` also reads the
features the head classified).

Examples:
    >>> validator = InformationMaximization()
    >>> validator.update(logits.softmax(dim=1))
    >>> score = validator.compute()
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from tlkit.errors import config_error
from tlkit.functional import (
    bnm_score,
    class_ami_score,
    im_score,
    image_thumbnails,
    marginal_entropy,
    pixel_ami_score,
    predicted_classes,
    safe_im_score,
    snd_score,
    top_class_share,
)


class TargetValidator(Metric):
    """Base: scores the first ``max_samples`` probability rows of the epoch (rank 0's first, then rank 1's, ...).

    Each rank keeps only its own first ``max_samples`` rows: those hold the first ``max_samples`` of every rank's
    rows in that order, so a large target validation set costs no more memory, nor a larger gather at ``compute``,
    than a target of ``max_samples`` images.

    Args:
        max_samples: rows scored at most (SND's pairwise similarities grow with its square).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    score: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, max_samples: int = 2048, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_samples < 1:
            raise config_error("max_samples", "an integer >= 1", max_samples)
        self.max_samples = max_samples
        self.add_state("probabilities", default=[], dist_reduce_fx="cat")

    def update(self, probabilities: torch.Tensor) -> None:
        """Add a batch of class probabilities, shape (N, classes), rows summing to 1."""
        if probabilities.ndim != 2:
            raise ValueError(f"Expected probabilities of shape (N, classes), but got {tuple(probabilities.shape)}.")
        self.probabilities.append(probabilities[: self.room()].detach().float())

    def room(self) -> int:
        """How many more rows this rank keeps (0 once it holds ``max_samples``)."""
        return max(0, self.max_samples - sum(len(rows) for rows in self.probabilities))

    def kept(self, rows: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """A row state as one tensor, every rank's rows in rank order (as ``compute`` sees it), ``max_samples`` at
        most."""
        return dim_zero_cat(rows)[: self.max_samples]

    def compute(self) -> torch.Tensor:
        return type(self).score(self.kept(self.probabilities))


class InformationMaximization(TargetValidator):
    """IM: entropy of the mean prediction minus the mean entropy (confident and diverse predictions score high)."""

    score = staticmethod(im_score)


class SoftNeighborhoodDensity(TargetValidator):
    """SND (Saito et al., 2021): how densely target predictions cluster with their soft neighbours."""

    score = staticmethod(snd_score)


class BatchNuclearNorm(TargetValidator):
    """BNM (Cui et al., 2020): nuclear norm of the prediction matrix per row."""

    score = staticmethod(bnm_score)


class ClassClusterAgreement(TargetValidator):
    """ClassAMI (Musgrave et al., 2022): agreement of the predicted classes with k-means clusters of the features.

    ``update`` takes the features the head classified besides the probabilities (a `MetricCollection` hands each
    validator only the keyword arguments it names, so the others keep reading probabilities alone).
    """

    def __init__(self, max_samples: int = 2048, **kwargs) -> None:
        super().__init__(max_samples, **kwargs)
        self.add_state("features", default=[], dist_reduce_fx="cat")

    def update(self, probabilities: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """Add a batch of class probabilities (N, classes) and the features (N, dim) they were computed from."""
        if features is None or features.ndim != 2 or features.shape[0] != probabilities.shape[0]:
            shape = None if features is None else tuple(features.shape)
            raise ValueError(f"Expected features of shape ({probabilities.shape[0]}, dim), but got {shape}.")
        room = self.room()
        super().update(probabilities)
        self.features.append(features[:room].detach().float())

    def compute(self) -> torch.Tensor:
        return class_ami_score(self.kept(self.features), self.kept(self.probabilities))


class ImageClusterAgreement(TargetValidator):
    """PixelAMI: agreement of the predicted classes with k-means clusters of the images' own pixels (16 x 16
    thumbnails, 3 clusters a class; `tlkit.functional.pixel_ami_score`), the same clusters for every model of the same
    images. For targets whose classes are shapes (digits, characters); on photographs use `ClassClusterAgreement`.

    ``update`` takes the images the probabilities were computed from (keeping their thumbnails only).
    """

    def __init__(self, max_samples: int = 2048, **kwargs) -> None:
        super().__init__(max_samples, **kwargs)
        self.add_state("thumbnails", default=[], dist_reduce_fx="cat")

    def update(self, probabilities: torch.Tensor, images: torch.Tensor | None = None) -> None:
        """Add a batch of class probabilities (N, classes) and the images (N, channels, H, W) they were computed
        from."""
        if images is None or images.ndim != 4 or images.shape[0] != probabilities.shape[0]:
            shape = None if images is None else tuple(images.shape)
            raise ValueError(f"Expected images of shape ({probabilities.shape[0]}, channels, H, W), but got {shape}.")
        room = self.room()
        super().update(probabilities)
        self.thumbnails.append(image_thumbnails(images[:room]))

    def compute(self) -> torch.Tensor:
        return pixel_ami_score(self.kept(self.thumbnails), self.kept(self.probabilities))


class TopClassShare(TargetValidator):
    """Collapse diagnostic: the share of predictions in the most frequent class (1/classes when balanced)."""

    higher_is_better = False
    score = staticmethod(top_class_share)


class PredictedClasses(TargetValidator):
    """Collapse diagnostic: the fewest classes that take 90% of the predictions."""

    score = staticmethod(predicted_classes)


class MarginalEntropy(TargetValidator):
    """Collapse diagnostic: the entropy (nats) of the mean prediction, log(classes) at most."""

    score = staticmethod(marginal_entropy)


class SafeInformationMaximization(TargetValidator):
    """IM that does not prefer a model worse than the unadapted reference (`tlkit.functional.safe_im_score`).

    Besides the target probabilities (``update``) it counts the source validation predictions
    (``update_source``); `set_reference` gives it the source-only model's scores. Until then it is IM.
    """

    def __init__(self, max_samples: int = 2048, **kwargs) -> None:
        super().__init__(max_samples, **kwargs)
        self.add_state("source_correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("source_total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        #: The reference's ``im``, ``predicted_classes`` and ``source_acc`` (the same on every rank), or None.
        self.reference: dict[str, float] | None = None

    def set_reference(self, reference: dict[str, float] | None) -> None:
        self.reference = dict(reference) if reference else None

    def update_source(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of source validation predictions (logits or probabilities, (N, classes)) and their labels."""
        self.source_correct += (logits.argmax(dim=1) == labels).sum()
        self.source_total += labels.numel()

    def compute(self) -> torch.Tensor:
        total = int(self.source_total)
        source_accuracy = float(self.source_correct) / total if total else None
        return safe_im_score(self.kept(self.probabilities), source_accuracy, self.reference)
