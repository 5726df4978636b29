"""Seeded, stratified splits and limited-label subsets."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from tlkit.errors import ConfigError

if TYPE_CHECKING:
    from tlkit.datamodules.datasets import Split


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
                    f"{labels_per_class} while class {classes[label]!r} has {len(indices)} training images."
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
) -> dict[str, Split]:
    """``splits`` with ``test`` and ``val`` held out of ``train`` where the data has none of its own (fractions of the
    whole), then the training split limited to ``labels_per_class`` or ``train_fraction``."""
    train = splits["train"]
    if "test" not in splits:
        rest, held = stratified_split(train.labels, test_fraction, seed)
        train, splits["test"] = train.subset(rest), train.subset(held)
        # Both fractions are of the whole: rescale val's to what is left after the test split.
        val_fraction = val_fraction / (1.0 - test_fraction)
    if "val" not in splits:
        rest, held = stratified_split(train.labels, val_fraction, seed + 1)
        train, splits["val"] = train.subset(rest), train.subset(held)
    splits["train"] = train.subset(limit_labels(train.labels, classes, seed, labels_per_class, train_fraction))
    return splits
