"""Seeded splits and limited-label subsets: stratified by class for one class per example; for label sets and
numeric targets (whose combinations rarely repeat) a seeded random split, and for label sets a subset with at least
``labels_per_class`` positives of every label."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import ConfigError, config_error

if TYPE_CHECKING:
    from tlkit.datamodules.datasets import Split
    from tlkit.protocols import TargetKind


def _by_class(labels: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[label].append(index)
    return groups


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (rest, held_out) with ``fraction`` of every class held out (at least one per class when the
    class has two or more samples)."""
    rng = np.random.default_rng(seed)
    rest, held = [], []
    for _, indices in sorted(_by_class(labels).items()):
        indices = list(rng.permutation(indices))
        k = int(round(fraction * len(indices)))
        if fraction > 0 and len(indices) >= 2:
            k = min(max(k, 1), len(indices) - 1)
        held += indices[:k]
        rest += indices[k:]
    return sorted(int(i) for i in rest), sorted(int(i) for i in held)


def random_split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(count)`` into (rest, held_out) with ``fraction`` held out at random (at least one when the
    fraction is positive and two or more samples exist)."""
    order = np.random.default_rng(seed).permutation(count)
    k = int(round(fraction * count))
    if fraction > 0 and count >= 2:
        k = min(max(k, 1), count - 1)
    return sorted(int(i) for i in order[k:]), sorted(int(i) for i in order[:k])


def limit_label_sets(
    targets: np.ndarray,
    classes: list[str],
    seed: int,
    labels_per_class: int | None = None,
    train_fraction: float | None = None,
) -> list[int]:
    """Indices of a seeded subset of multi-hot ``targets`` (N, L): ``train_fraction`` of the samples, or for each
    label in turn (rarest first) samples holding it until it has ``labels_per_class`` positives in the subset."""
    count = len(targets)
    rng = np.random.default_rng(seed)
    if labels_per_class is None and train_fraction is None:
        return list(range(count))
    if train_fraction is not None:
        return sorted(int(i) for i in rng.permutation(count)[: max(1, int(round(train_fraction * count)))])
    positives = targets.sum(axis=0)
    chosen: set[int] = set()
    for label in np.argsort(positives, kind="stable"):
        if positives[label] < labels_per_class:
            raise ConfigError(
                f"Expected `labels_per_class` to be at most the rarest label's training count, but got "
                f"{labels_per_class} while label {classes[label]!r} is on {int(positives[label])} training samples."
            )
        have = int(sum(targets[i, label] for i in chosen))
        for index in rng.permutation(np.flatnonzero(targets[:, label])):
            if have >= labels_per_class:
                break
            if int(index) not in chosen:
                chosen.add(int(index))
                have += 1
    return sorted(chosen)


def limit_labels(
    labels: list[int],
    classes: list[str],
    seed: int,
    labels_per_class: int | None = None,
    train_fraction: float | None = None,
) -> list[int]:
    """Indices of a seeded, stratified subset: ``labels_per_class`` per class, or ``train_fraction`` of each class."""
    if labels_per_class is None and train_fraction is None:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    keep = []
    for label, indices in sorted(_by_class(labels).items()):
        if labels_per_class is not None:
            if len(indices) < labels_per_class:
                raise ConfigError(
                    f"Expected `labels_per_class` to be at most the smallest class's training size, but got "
                    f"{labels_per_class} while class {classes[label]!r} has {len(indices)} training examples."
                )
            k = labels_per_class
        else:
            k = max(1, int(round(train_fraction * len(indices))))
        keep += list(rng.permutation(indices)[:k])
    return sorted(int(i) for i in keep)


def train_val_test(
    splits: dict[str, Split],
    classes: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    labels_per_class: int | None = None,
    train_fraction: float | None = None,
    kind: TargetKind = "class",
) -> dict[str, Split]:
    """``splits`` with ``test`` and ``val`` held out of ``train`` where the data has none of its own (fractions of the
    whole), then the training split limited to ``labels_per_class`` or ``train_fraction``.

    ``kind`` is what the labels are: class indices (stratified splits, per-class limits), multi-hot label sets or
    numeric targets (random splits; per-label limits for label sets; ``labels_per_class`` does not apply to
    numbers)."""
    if kind == "values" and labels_per_class is not None:
        raise config_error("labels_per_class", "unset for numeric targets (use train_fraction)", labels_per_class)

    def hold_out(labels: list[Any], fraction: float, split_seed: int) -> tuple[list[int], list[int]]:
        if kind == "class":
            return stratified_split(labels, fraction, split_seed)
        return random_split(len(labels), fraction, split_seed)

    train = splits["train"]
    if "test" not in splits:
        rest, held = hold_out(train.labels, test_fraction, seed)
        train, splits["test"] = train.subset(rest), train.subset(held)
        # Both fractions are of the whole: rescale val's to what is left after the test split.
        val_fraction = val_fraction / (1.0 - test_fraction)
    if "val" not in splits:
        rest, held = hold_out(train.labels, val_fraction, seed + 1)
        train, splits["val"] = train.subset(rest), train.subset(held)
    if kind == "class":
        keep = limit_labels(train.labels, classes, seed, labels_per_class, train_fraction)
    elif kind == "labels":
        keep = limit_label_sets(np.stack(train.labels), classes, seed, labels_per_class, train_fraction)
    else:
        keep = limit_label_sets(np.zeros((len(train.labels), 0)), classes, seed, None, train_fraction)
    splits["train"] = train.subset(keep)
    return splits
