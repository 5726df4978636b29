"""Choosing the pretrained model before training: rank candidate backbones, or one backbone's layer groups, on a
labelled task from their frozen features.

Each candidate costs one forward pass over the training split, through the feature cache, so a FeatureExtraction run
that follows on the same data reuses the features instead of computing them again (``disk`` mode across processes,
``memory`` within one). The scores (all higher-is-better):

- ``logme``: LogME's evidence (You et al., 2021), no training, no source classifier needed;
- ``leep`` and ``nce``: from the candidate's own (ImageNet) classifier, where it has one (Nguyen et al., 2020; Tran
  et al., 2019);
- ``h_score``: class separation whitened by the feature covariance (Bao et al., 2019);
- ``knn_accuracy`` and ``linear_probe_accuracy``: cross-validated on the training features, the honest baselines.

For label sets (multi-label data) LogME is the mean over labels and the baselines score micro-F1; for numeric
targets LogME is the mean over the (standardised) targets (You et al. define it for regression) and the baselines,
a k-NN and a ridge regression, score R²; LEEP, NCE and H-score, defined for one class per example, do not apply.

Examples:
    >>> results = rank_backbones(DigitsDataModule(labels_per_class=10), ["tf_efficientnet_lite0", "resnet18"])
    >>> print(markdown_table(results))
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from tlkit.backbones import Backbone
from tlkit.data_request import DataRequest, Features
from tlkit.datamodules import ImageDataModule
from tlkit.errors import ConfigError, config_error
from tlkit.features import FeatureCache, FeatureServing
from tlkit.functional import h_score, leep, logme, logme_targets, nce
from tlkit.protocols import DescribesTargets, TargetKind

Score = Literal["logme", "leep", "nce", "h_score", "knn_accuracy", "linear_probe_accuracy"]
SCORES: tuple[Score, ...] = ("logme", "leep", "nce", "h_score", "knn_accuracy", "linear_probe_accuracy")
#: Folds of the cross-validated baselines (fewer when a class has fewer training images).
FOLDS = 5


@dataclass
class Ranked:
    """One candidate's scores (None where a score does not apply) and what computing them cost."""

    candidate: str
    num_features: int
    scores: dict[str, float | None]
    feature_seconds: float  # the forward pass over the training split (0 when the cache had the features)
    score_seconds: dict[str, float] = field(default_factory=dict)


#: Where ranking reports what it is doing, one line at a time (the command prints them to stderr).
Progress = Callable[[str], None]


def score_features(
    features: torch.Tensor,
    labels: torch.Tensor,
    source_probabilities: torch.Tensor | None = None,
    seed: int = 0,
    scores: Sequence[Score] = SCORES,
    progress: Progress | None = None,
    kind: TargetKind = "class",
) -> tuple[dict[str, float | None], dict[str, float]]:
    """The requested ``scores`` of ``features`` for ``labels`` (None for one not requested or not applicable);
    returns (scores, seconds per computed score). ``progress`` is told each score as it is computed. ``kind`` says
    what ``labels`` are: class indices (N,), multi-hot label sets or numeric targets (N, K)."""
    if kind != "class":
        computations = {
            "logme": lambda: logme_targets(features, labels, standardise=kind == "values"),
            "knn_accuracy": lambda: _cross_validated_targets(features, labels, seed, "knn", kind),
            "linear_probe_accuracy": lambda: _cross_validated_targets(features, labels, seed, "linear", kind),
        }
        return _compute(computations, scores, progress)
    num_classes = int(labels.max()) + 1
    needs_source = source_probabilities is not None
    computations: dict[str, Callable[[], float]] = {
        "logme": lambda: logme(features, labels, num_classes),
        "leep": lambda: leep(source_probabilities, labels, num_classes),
        "nce": lambda: nce(source_probabilities.argmax(dim=1), labels, num_classes),
        "h_score": lambda: h_score(features, labels, num_classes),
        "knn_accuracy": lambda: _cross_validated(features, labels, seed, "knn"),
        "linear_probe_accuracy": lambda: _cross_validated(features, labels, seed, "linear"),
    }
    if not needs_source:
        del computations["leep"], computations["nce"]
    return _compute(computations, scores, progress)


def _compute(
    computations: dict[str, Callable[[], float]], scores: Sequence[Score], progress: Progress | None
) -> tuple[dict[str, float | None], dict[str, float]]:
    """Each requested score that applies (has a computation), in `SCORES` order; the others None."""
    values: dict[str, float | None] = dict.fromkeys(SCORES)
    seconds: dict[str, float] = {}
    for name in SCORES:
        if name not in scores or name not in computations:
            continue
        started = time.perf_counter()
        values[name] = computations[name]()
        seconds[name] = time.perf_counter() - started
        if progress is not None:
            progress(f"  {name} = {values[name]:.4g} ({seconds[name]:.1f} s)")
    return values, seconds


def _cross_validated(features: torch.Tensor, labels: torch.Tensor, seed: int, kind: Literal["knn", "linear"]) -> float:
    """Mean accuracy over stratified folds of the training features: k-NN (cosine) or logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = features.double().numpy(), labels.numpy()
    smallest = int(np.bincount(y).min())
    folds = min(FOLDS, smallest)
    if folds < 2:
        raise ConfigError(
            "Expected at least 2 training images per class to cross-validate the k-NN and linear-probe baselines, "
            f"but a class has {smallest}; rank with `scores: [logme, ...]` without them."
        )
    if kind == "knn":
        model = KNeighborsClassifier(n_neighbors=min(5, folds), metric="cosine")
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.1))
    return float(cross_val_score(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).mean())


def _cross_validated_targets(
    features: torch.Tensor, targets: torch.Tensor, seed: int, kind: Literal["knn", "linear"], target_kind: TargetKind
) -> float:
    """The baselines' forms for label sets (k-NN and one-vs-rest logistic regression, micro-F1) and numeric targets
    (k-NN and ridge regression, R²), over shuffled folds of the training features."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = features.double().numpy(), targets.double().numpy().reshape(len(targets), -1)
    folds = min(FOLDS, len(x))
    if target_kind == "labels":
        y = y.astype(np.int64)
        if kind == "knn":
            model = KNeighborsClassifier(n_neighbors=min(5, len(x) - 1), metric="cosine")
        else:
            model = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=500, C=0.1)))
        scoring = "f1_micro"
    else:
        y = y[:, 0] if y.shape[1] == 1 else y
        if kind == "knn":
            model = KNeighborsRegressor(n_neighbors=min(5, len(x) - 1), metric="cosine")
        else:
            # The penalty chosen by leave-one-out within each fold (features often outnumber images); unscaled: a
            # feature nearly constant in training would be blown up by standardising and swamp the held-out fold.
            model = RidgeCV(alphas=np.logspace(-2, 5, 15))
        scoring = "r2"
    return float(cross_val_score(model, x, y, cv=KFold(folds, shuffle=True, random_state=seed), scoring=scoring).mean())


def _candidate_backbone(candidate: str | Backbone, weights: str | None) -> tuple[str, Backbone]:
    if isinstance(candidate, Backbone):
        return candidate.name, candidate
    name, _, own_weights = candidate.partition("@")
    chosen = own_weights or weights
    chosen = None if chosen in ("null", "none", "None") else chosen
    try:
        return candidate, Backbone(name, weights=chosen)
    except ConfigError as err:
        raise ConfigError(f"Candidate {candidate!r}: {err}") from err


def _labelled_training_split(datamodule: ImageDataModule) -> None:
    """Set the datamodule up and check it has a labelled ``train`` split (a domain pair has none of its own)."""
    datamodule.setup("fit")
    if "train" not in datamodule.splits:
        raise config_error(
            "data",
            "a datamodule with one labelled training split (ImageFolderDataModule, DigitsDataModule, or another "
            "ClassificationDataModule)",
            type(datamodule).__name__,
        )


def _training_features(datamodule, backbone: Backbone, cache: FeatureCache) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The training split's features through the cache (the key a FeatureExtraction run uses), and the seconds."""
    computed = cache.computed
    started = time.perf_counter()
    request = DataRequest.for_backbone(backbone)
    # The training transform without augmentation is the evaluation transform: the one FeatureExtraction caches with
    # (`augment: false`), so its run on the same data finds these features.
    datamodule.serve_features(FeatureServing(cache, backbone.eval()))
    try:
        dataset = datamodule.dataset("train", train=False, request=request)
    finally:
        datamodule.serve_features(None)  # the dataset keeps its serving; the next candidate hands in its own
    features, labels = [], []
    for batch, y in DataLoader(dataset, batch_size=1024):
        features.append(batch.values if isinstance(batch, Features) else batch)
        labels.append(y)
    seconds = time.perf_counter() - started if cache.computed > computed else 0.0
    return torch.cat(features), torch.cat(labels), seconds


def rank_backbones(
    datamodule: ImageDataModule,
    candidates: Sequence[str | Backbone] | Mapping[str, str | Backbone],
    weights: str | None = "imagenet",
    cache: FeatureCache | None = None,
    sort_by: Score = "logme",
    seed: int = 0,
    scores: Sequence[Score] = SCORES,
    progress: Progress | None = None,
) -> list[Ranked]:
    """Score each candidate backbone's frozen features on ``datamodule``'s training split; best first.

    Args:
        datamodule: a tlkit image datamodule (its training split and transforms are used).
        candidates: timm names, ``torchvision:<name>``, ``<name>@<weights>`` (``imagenet``, ``null`` or a file), or
            ready `Backbone`s (``Backbone(model=...)`` for any module); a mapping names them in the results.
        weights: weights of the named candidates without their own ``@<weights>``.
        cache: where features are computed once and kept (default: this process's memory).
        sort_by: the score the result is ordered by.
        seed: seed of the baselines' folds.
        scores: which scores to compute (default all); ``[logme]`` alone costs little beyond the forward passes,
            the cross-validated baselines the most.
        progress: told, one line at a time, which candidate and score is being computed (ranking takes minutes).
    """
    if not candidates:
        raise config_error("candidates", "at least one backbone to rank", list(candidates))
    _check_scores(scores, sort_by)
    cache = cache if cache is not None else FeatureCache("memory")
    _labelled_training_split(datamodule)
    named = list(candidates.items()) if isinstance(candidates, Mapping) else [(None, c) for c in candidates]
    results = []
    for position, (display_name, candidate) in enumerate(named, start=1):
        name, backbone = _candidate_backbone(candidate, weights)
        name = display_name or name
        features, labels, feature_seconds = _training_features(datamodule, backbone, cache)
        if progress is not None:
            progress(f"[{position}/{len(named)}] {name}: features of {len(labels)} images in {feature_seconds:.1f} s")
        kind = _target_kind(datamodule)
        source = _source_probabilities(backbone, features) if kind == "class" else None
        values, seconds = score_features(features, labels, source, seed, scores, progress, kind)
        results.append(Ranked(name, backbone.num_features, values, feature_seconds, seconds))
    return sort_results(results, sort_by)


def rank_layers(
    datamodule: ImageDataModule,
    backbone: str | Backbone,
    weights: str | None = "imagenet",
    sort_by: Score | None = None,
    seed: int = 0,
    batch_size: int = 128,
    scores: Sequence[Score] = SCORES,
    progress: Progress | None = None,
) -> list[Ranked]:
    """Score the pooled output of each layer group of one backbone, input to output (or best first with
    ``sort_by``): where transferable features end, and so how many top groups are worth fine-tuning. ``progress``
    is told each group and score as it is computed."""
    _check_scores(scores, sort_by)
    name, backbone = _candidate_backbone(backbone, weights)
    if backbone.reads_audio:  # a group's output is every frame, padding included: not features to pool
        raise config_error("layers_of", "an image or text backbone (audio backbones are ranked as candidates)", name)
    _labelled_training_split(datamodule)
    request = DataRequest.for_backbone(backbone)
    dataset = datamodule.dataset("train", train=False, request=request)
    started = time.perf_counter()
    backbone.eval()
    per_group: list[list[torch.Tensor]] = [[] for _ in backbone.layer_groups]
    labels = []
    with torch.inference_mode():
        for x, y in DataLoader(dataset, batch_size=batch_size):
            for outputs, output in zip(per_group, backbone.group_outputs(x)):
                outputs.append(output.float())
            labels.append(torch.as_tensor(y))
    forward_seconds = time.perf_counter() - started
    targets = torch.cat(labels)
    results = []
    for position, (group, outputs) in enumerate(zip(backbone.layer_groups, per_group), start=1):
        features = torch.cat(outputs)
        if progress is not None:
            progress(f"[{position}/{len(per_group)}] {group.name}: {features.shape[1]} features")
        values, seconds = score_features(features, targets, None, seed, scores, progress, _target_kind(datamodule))
        results.append(Ranked(group.name, features.shape[1], values, forward_seconds, seconds))
    return sort_results(results, sort_by) if sort_by is not None else results


def _target_kind(datamodule: ImageDataModule) -> TargetKind:
    return datamodule.target_kind if isinstance(datamodule, DescribesTargets) else "class"


def _check_scores(scores: Sequence[str], sort_by: str | None) -> None:
    for name in scores:
        if name not in SCORES:
            raise config_error("scores", "a list of score names", name, options=SCORES)
    if not scores:
        raise config_error("scores", "at least one score name", list(scores), options=SCORES)
    if sort_by is not None and sort_by not in scores:
        raise config_error("sort_by", f"one of the computed scores ({', '.join(scores)})", sort_by)


def _source_probabilities(backbone: Backbone, features: torch.Tensor) -> torch.Tensor | None:
    classifier = backbone.source_classifier
    if classifier is None:
        return None
    with torch.inference_mode():
        return classifier.eval()(features).float().softmax(dim=1)


def sort_results(results: list[Ranked], sort_by: Score) -> list[Ranked]:
    """Best first by ``sort_by``; candidates without that score last."""
    return sorted(results, key=lambda r: (r.scores[sort_by] is None, -(r.scores[sort_by] or 0.0)))


def markdown_table(results: Sequence[Ranked], sort_by: Score | None = "logme") -> str:
    """The results as a Markdown table, in their order (``sort_by`` names it; None: input to output, for layers)."""
    header = ["rank", "candidate", "features", *SCORES, "forward s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for position, result in enumerate(results, start=1):
        cells = [str(position), f"`{result.candidate}`", str(result.num_features)]
        cells += ["-" if result.scores[s] is None else f"{result.scores[s]:.4g}" for s in SCORES]
        cells.append(f"{result.feature_seconds:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    order = f"Ranked by `{sort_by}`" if sort_by is not None else "Layer groups input to output"
    return "\n".join(lines) + (
        f"\n\n{order}; higher is better for every score (the baselines score micro-F1 for label sets and R² for "
        "numbers)."
    )


def write_results(results: Sequence[Ranked], directory: str | Path) -> tuple[Path, Path]:
    """``ranking.csv`` and ``ranking.json`` in ``directory`` (created); returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = directory / "ranking.csv", directory / "ranking.json"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "candidate", "num_features", *SCORES, "feature_seconds"])
        for position, result in enumerate(results, start=1):
            row = [position, result.candidate, result.num_features, *(result.scores[s] for s in SCORES)]
            writer.writerow([*("" if v is None else v for v in row), result.feature_seconds])
    json_path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return csv_path, json_path
