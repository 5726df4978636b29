"""Scores that rank models on unlabelled target data (higher is better for all of them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tlkit.functional.collapse import COLLAPSE_SHARE, collapsed, predicted_classes


def im_score(probabilities: torch.Tensor) -> torch.Tensor:
    """Information maximisation: entropy of the mean prediction minus the mean entropy of predictions.

    High when predictions are individually confident and collectively diverse across classes.
    """
    eps = 1e-12
    mean = probabilities.mean(dim=0)
    marginal_entropy = -(mean * torch.log(mean + eps)).sum()
    conditional_entropy = -(probabilities * torch.log(probabilities + eps)).sum(dim=1).mean()
    return marginal_entropy - conditional_entropy


def snd_score(probabilities: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Soft neighbourhood density (Saito et al., 2021): mean entropy of each sample's softmax-weighted similarity to
    the others, on L2-normalised predictions. High when target samples form dense neighbourhoods.

    A single sample has no neighbours: its score is 0 (the softmax over an empty row would be NaN).
    """
    if probabilities.shape[0] < 2:
        return probabilities.new_zeros(())
    x = F.normalize(probabilities, dim=1)
    similarity = x @ x.T
    n = similarity.shape[0]
    similarity = similarity.masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), float("-inf"))
    neighbours = F.softmax(similarity / temperature, dim=1)
    return -(neighbours * torch.log(neighbours + 1e-12)).sum(dim=1).mean()


def bnm_score(probabilities: torch.Tensor) -> torch.Tensor:
    """Batch nuclear-norm (Cui et al., 2020): nuclear norm of the prediction matrix divided by the number of rows.

    High when predictions are both confident and diverse.
    """
    return torch.linalg.matrix_norm(probabilities, ord="nuc") / probabilities.shape[0]


def class_ami_score(
    features: torch.Tensor, probabilities: torch.Tensor, seed: int = 0, clusters: int | None = None
) -> torch.Tensor:
    """ClassAMI (Musgrave et al., 2022): how well the predicted classes agree with k-means clusters of the features.

    The L2-normalised ``features`` (N, dim) are clustered into ``clusters`` clusters (by default as many as
    ``probabilities`` (N, classes) has classes); the score is the adjusted mutual information of the clusters and the
    argmax predictions: 1 when the classifier's partition is the features' own cluster structure, about 0 when they
    are unrelated or every row predicts one class. Unlike IM and BNM it does not rise with confidence alone, so a loss
    that makes predictions confident without making them match the features' structure (MCC's collapse) does not buy
    it.

    The features need not be the classifier's own: clusters of the same images in a representation no run trained
    (their pixels, say) score every model against one fixed structure, which a model cannot shape to its own
    predictions (more clusters than classes, e.g. 3 a class, follow a class split into several looks).

    Deterministic for a given ``seed`` (the k-means initialisation), so every rank scores the same gathered rows the
    same way. Fewer rows than two per cluster: 0 (too few to cluster).
    """
    from sklearn.cluster import KMeans  # imported here: scikit-learn's import is slow, and only validation needs it
    from sklearn.metrics import adjusted_mutual_info_score

    n, classes = probabilities.shape
    clusters = classes if clusters is None else clusters
    if n < 2 * clusters or classes < 2 or clusters < 2:
        return probabilities.new_zeros(())
    points = F.normalize(features.detach().float(), dim=1).cpu().numpy()
    assignments = KMeans(n_clusters=clusters, n_init=1, random_state=seed).fit_predict(points)
    predicted = probabilities.argmax(dim=1).cpu().numpy()
    return probabilities.new_tensor(float(adjusted_mutual_info_score(assignments, predicted)))


#: Side of the thumbnails `pixel_ami_score` clusters: a digit's shape survives 16 x 16 (and 8 x 8 picks the same
#: method on the benchmark's shifts); 2,048 RGB thumbnails of this side are 6 MB.
THUMBNAIL_SIZE = 16
#: Clusters per class of `pixel_ami_score` (a class drawn in several styles is several clusters of pixels).
PIXEL_CLUSTERS_PER_CLASS = 3


def image_thumbnails(images: torch.Tensor, size: int = THUMBNAIL_SIZE) -> torch.Tensor:
    """``images`` (N, channels, H, W) shrunk by area averaging to ``size`` x ``size`` and flattened: (N, features)."""
    if images.ndim != 4:
        raise ValueError(f"Expected images of shape (N, channels, H, W), but got {tuple(images.shape)}.")
    return F.adaptive_avg_pool2d(images.detach().float(), size).flatten(1)


def pixel_ami_score(thumbnails: torch.Tensor, probabilities: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """`class_ami_score` against k-means clusters of the images themselves (`image_thumbnails`), 3 a class.

    ClassAMI on the classifier's own features rewards a model whose features cluster as its predictions do, which
    an adaptation loss can arrange while the predictions are wrong (MCC on digits -> MNIST: 0.90 at 40% accuracy).
    The pixels are a representation no training changes: every model of the same images is scored against the same
    clusters, so only predictions that follow the images' own structure score high. Sound where a class is mostly
    its shape at low resolution (digits, characters, icons); on photographs pixel clusters follow colour and
    background instead, and ``val/class_ami`` is the validator to compare methods by.
    """
    clusters = PIXEL_CLUSTERS_PER_CLASS * probabilities.shape[1]
    return class_ami_score(thumbnails, probabilities, seed=seed, clusters=clusters)


def below_reference(
    predicted: float,
    source_accuracy: float | None,
    reference: dict[str, float],
    collapse_share: float = COLLAPSE_SHARE,
    source_tolerance: float = 0.05,
) -> bool:
    """Whether an adapted model looks worse than the unadapted ``reference`` (its ``predicted_classes`` and
    ``source_acc``): its predictions fill fewer than ``collapse_share`` of the classes the reference's fill
    (``predicted``, `predicted_classes`; collapse), or its source validation accuracy fell more than
    ``source_tolerance`` below the reference's (the adaptation destroyed what the source taught)."""
    fewer_classes = "predicted_classes" in reference and collapsed(
        predicted, reference["predicted_classes"], collapse_share
    )
    forgot = (
        source_accuracy is not None
        and "source_acc" in reference
        and source_accuracy < reference["source_acc"] - source_tolerance
    )
    return fewer_classes or forgot


def safe_im_score(
    probabilities: torch.Tensor,
    source_accuracy: float | None = None,
    reference: dict[str, float] | None = None,
) -> torch.Tensor:
    """`im_score`, or one below the reference's IM when the model looks worse than the unadapted ``reference``
    (`below_reference`; the reference's ``im``, ``predicted_classes`` and ``source_acc``). Without a reference, IM.

    IM rewards confident, diverse predictions, which an adaptation loss can buy with accuracy; checkpoints chosen on
    this score fall back to the reference instead of preferring a collapsed model.
    """
    im = im_score(probabilities)
    if not reference or "im" not in reference:
        return im
    return im.new_tensor(safe_im_value(float(im), float(predicted_classes(probabilities)), source_accuracy, reference))


def safe_im_value(
    im: float, predicted: float, source_accuracy: float | None, reference: dict[str, float] | None
) -> float:
    """`safe_im_score` from a validation's recorded values: its IM, `predicted_classes` and source accuracy."""
    if reference and "im" in reference and below_reference(predicted, source_accuracy, reference):
        return min(im, reference["im"]) - 1.0
    return im


def consensus_agreement(probabilities: Sequence[torch.Tensor]) -> list[float]:
    """For each model's class probabilities on the same images (each (N, classes)), the share of the images on which
    it predicts the class of the mean prediction of them all: how much each agrees with the ensemble of the models.

    The rule of ``tlkit select --by consensus``: among adapted models, the one that agrees most with the others is
    rarely the one adaptation sent its own wrong way (a collapse that confidence-based validators reward).
    """
    consensus = torch.stack([p.float() for p in probabilities]).mean(dim=0).argmax(dim=1)
    return [float((p.argmax(dim=1) == consensus).float().mean()) for p in probabilities]
