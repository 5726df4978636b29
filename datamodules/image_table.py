"""`ImageTableDataModule`: your own images listed in a CSV, TSV or JSON Lines table with their targets: a class, a
set of labels, or numbers."""

from __future__ import annotations

from tlkit.datamodules.classification import ClassificationDataModule
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.folders import check_images
from tlkit.datamodules.tables import TargetColumns, read_split_tables, row_file
from tlkit.errors import ConfigError
from tlkit.protocols import TargetKind


class ImageTableDataModule(ClassificationDataModule):
    """Images named in a table (``image_column``: a path, relative to the table's folder or absolute) with their
    targets: a class per image (``label_column``), a set of labels per image (``multi_label``: a JSON list, or names
    joined by ``label_separator``; for ``task: MultiLabel``), or one or more numbers (``target_columns``; for
    ``task: Regression``).

    Every row is checked before training: a missing or unreadable image, an empty label set, a label outside
    ``classes``, or a missing, non-numeric, NaN or infinite target is one line naming the file and line.

    Args:
        train: the training table (.csv, .tsv or .jsonl).
        val: a validation table; default: held out of ``train`` (``val_fraction``).
        test: a test table; default: held out of ``train`` (``test_fraction``).
        image_column: the column holding each image's path.
        label_column: the column holding the class, or the set of labels.
        multi_label: each row has a set of labels.
        label_separator: what joins a row's labels when they are one string.
        target_columns: numeric columns, one regression target each (``label_column`` is then not read).
        classes: the class (or label) names in output order; default: those found in ``train``, sorted.
        verify_images: decode every image once up front (catches truncated files before training).

    The other arguments are `ClassificationDataModule`'s; ``labels_per_class`` keeps, for label sets, enough images
    for every label to have that many.

    Examples:
        >>> dm = ImageTableDataModule("photos/train.csv", multi_label=True, label_column="tags")
        >>> dm = ImageTableDataModule("scans/train.csv", target_columns=["severity"])
    """

    def __init__(
        self,
        train: str,
        *,
        val: str | None = None,
        test: str | None = None,
        image_column: str = "image",
        label_column: str = "label",
        multi_label: bool = False,
        label_separator: str = ";",
        target_columns: list[str] | None = None,
        classes: list[str] | None = None,
        verify_images: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.targets = TargetColumns.from_arguments(label_column, multi_label, label_separator, target_columns, classes)

    @property
    def target_kind(self) -> TargetKind:
        return self.targets.kind

    def describe_source(self) -> str:
        return repr(self.hparams.train)

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        hp = self.hparams
        files = {"train": hp.train, "val": hp.val, "test": hp.test}
        tables = read_split_tables(files, {"image_column": hp.image_column, **self.targets.columns()})
        names, targets = self.targets.read(tables)
        splits = {}
        for name, rows in tables.items():
            paths = [row_file(row, hp.image_column, where, files[name], "image") for row, where in rows]
            samples, labels = [], []
            checked = check_images(paths, hp.verify_images, self.medical)  # every image of the table at once
            for (_, where), path, target, (found, problem) in zip(rows, paths, targets[name], checked):
                if problem is not None:
                    raise ConfigError(f"Expected a readable image at {where}, but {str(path)!r} is {problem}.")
                samples += found
                labels += [target] * len(found)  # a volume's slices share its row's target
            splits[name] = Split(samples, labels)
        return names, splits
