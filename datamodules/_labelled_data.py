"""`LabelledData`: what every tlkit datamodule does with its data once read: load it once, know its classes, split."""

from __future__ import annotations

import numpy as np

from tlkit.datamodules._splits import train_val_test
from tlkit.datamodules.datasets import Split
from tlkit.errors import ConfigError, config_error
from tlkit.protocols import TargetKind


def check_split_arguments(batch_size: int, val_fraction: float, test_fraction: float) -> None:
    """The batch size and the held-out fractions every labelled datamodule takes."""
    if batch_size < 1:
        raise config_error("batch_size", "an integer >= 1", batch_size)
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise config_error(name, "in [0, 1)", value)
    if val_fraction + test_fraction >= 1.0:
        raise config_error("val_fraction + test_fraction", "below 1", val_fraction + test_fraction)


def check_label_limits(labels_per_class: int | None, train_fraction: float | None) -> None:
    """The limited-label arguments: at most one of them, each in range."""
    if labels_per_class is not None and train_fraction is not None:
        raise config_error("labels_per_class", "unset when train_fraction is set", labels_per_class)
    if labels_per_class is not None and labels_per_class < 1:
        raise config_error("labels_per_class", "an integer >= 1", labels_per_class)
    if train_fraction is not None and not 0.0 < train_fraction <= 1.0:
        raise config_error("train_fraction", "in (0, 1]", train_fraction)


class LabelledData:
    """Datamodule mixin: `load_data` runs once, whichever of `num_classes`, `class_names` or `setup` asks first
    (loading validates every sample), and `setup` turns what it read into splits with `make_splits`.

    A split's labels are class indices (``target_kind`` ``class``), multi-hot float32 vectors over ``classes``
    (``labels``: the label names) or float32 vectors of numbers (``values``: the target names); `num_classes` is
    the number of outputs a head needs either way.

    The datamodule's ``__init__`` sets ``classes = []``, ``splits = {}`` and ``_loaded = None``.
    """

    #: Completes "Expected at least 2 classes, but got 1 (...) in <source>: ..." for this kind of data.
    classes_hint = "a classifier needs two classes or more"
    #: What this datamodule's targets are (`tlkit.protocols.TargetKind`); a model's task checks it before training.
    target_kind: TargetKind = "class"

    def training_targets(self) -> np.ndarray:
        """The training split's targets as an (N, outputs) float array (one-hot for classes), after `setup`."""
        labels = self.splits["train"].labels
        if self.target_kind == "class":
            return np.eye(self.num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
        return np.stack(labels).astype(np.float32)

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        """Return (class names, the samples as read); called once."""
        raise NotImplementedError

    def make_splits(self, loaded: dict[str, Split]) -> dict[str, Split]:
        """Turn what `load_data` read into the named splits the loaders serve. By default, for one labelled set:
        ``val`` and ``test`` held out of ``train`` where the data has none of their own, then the training split
        limited (``val_fraction``, ``test_fraction``, ``seed``, ``labels_per_class``, ``train_fraction``), by
        `target_kind`. Domain pairs split otherwise."""
        hp = self.hparams
        return train_val_test(
            loaded,
            self.classes,
            hp.val_fraction,
            hp.test_fraction,
            hp.seed,
            hp.labels_per_class,
            hp.train_fraction,
            kind=self.target_kind,
        )

    def describe_source(self) -> str:
        """Where the data comes from, for error messages (a folder for folder-based datamodules)."""
        return type(self).__name__

    @property
    def num_classes(self) -> int:
        return len(self._load()[0])

    def class_names(self) -> list[str]:
        """Class names in label order (loads and checks the data on first use)."""
        return list(self._load()[0])

    def _load(self) -> tuple[list[str], dict[str, Split]]:
        if self._loaded is None:
            classes, loaded = self.load_data()
            if len(classes) < (2 if self.target_kind == "class" else 1):
                raise ConfigError(
                    f"Expected at least 2 classes, but got {len(classes)} ({', '.join(classes) or 'none'}) "
                    f"in {self.describe_source()}: {self.classes_hint}."
                )
            self._loaded = classes, loaded
        return self._loaded

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        classes, loaded = self._load()
        self.classes = classes
        self.splits = self.make_splits(dict(loaded))
