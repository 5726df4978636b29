"""`HuggingFaceImageDataModule` and `HuggingFaceTextDataModule`: a dataset of the Hugging Face `datasets` library (a
Hub name, a ``save_to_disk`` folder, Parquet/Arrow/CSV/JSON files or the ``imagefolder`` builder) with its targets:
a class, a set of labels, or numbers."""

from __future__ import annotations

from typing import Any

from PIL import Image

from tlkit.datamodules.classification import ClassificationDataModule
from tlkit.datamodules.datasets import Split, to_rgb
from tlkit.datamodules.hf_source import HubRow, HubSource, HubSplits, import_datasets, read_hub
from tlkit.datamodules.tables import TargetColumns
from tlkit.datamodules.text_datamodule import TextDataModule
from tlkit.errors import ConfigError
from tlkit.protocols import TargetKind


class HubData:
    """What both datamodules do with a dataset: the source and target arguments, reading once, the record."""

    source: HubSource
    targets: TargetColumns
    _hub: HubSplits | None = None

    @property
    def target_kind(self) -> TargetKind:
        return self.targets.kind

    def describe_source(self) -> str:
        return self.source.describe()

    def read_hub(self, sample_column: str, sample_argument: str) -> HubSplits:
        if self._hub is None:
            self._hub = read_hub(self.source, self.targets, sample_column, sample_argument)
        return self._hub

    def data_source(self) -> dict[str, Any] | None:
        """What a checkpoint records of the data: the dataset's path, config, revision, splits and their fingerprints
        (`tlkit.protocols.RecordsDataSource`)."""
        return self._hub.record if self._hub is not None else None


class HuggingFaceImageDataModule(HubData, ClassificationDataModule):
    """Images of a Hugging Face dataset with their targets: a class per image (``label_column``: a ``ClassLabel``,
    whose names and order are kept, or class names), a set of labels per image (``multi_label``: a list of
    ``ClassLabel`` or of names; for ``task: MultiLabel``), or one or more numbers (``target_columns``; for
    ``task: Regression``).

    Args:
        path: a Hub name (``beans``), a folder written by ``save_to_disk``, a ``.parquet``/``.arrow``/``.csv``/
            ``.jsonl`` file, or a packaged builder (``parquet``, ``imagefolder``) with ``data_files``.
        name: the dataset's configuration, for Hub datasets with several.
        revision: a Hub branch, tag or commit; pin one so a run reads the same data again.
        data_files: a builder's files: a pattern, a list, or ``{train: ..., test: ...}``.
        splits: which of the dataset's splits serve as ``train``, ``val`` and ``test`` (e.g.
            ``{val: validation, test: null}``); a split not named is found by its usual name, and held out of
            ``train`` (``val_fraction``, ``test_fraction``) when the dataset has none.
        image_column: the column of images (an ``Image`` feature, or paths or bytes that one can decode).
        label_column: the column of the class, or of the label set.
        multi_label: each row has a set of labels.
        label_separator: what joins a row's labels when they are one string.
        target_columns: numeric columns, one regression target each (``label_column`` is then not read).
        classes: the class names in output order where the label column does not carry them (names as strings, or
            integers i meaning ``classes[i]``); must match a ``ClassLabel``'s names where it does.
        verify_images: decode every image once before training (a broken one fails then, not mid-epoch).

    The other arguments are `ClassificationDataModule`'s. Every checkpoint records the dataset's path, config,
    revision and each split's fingerprint.

    Examples:
        >>> dm = HuggingFaceImageDataModule("beans", label_column="labels")
        >>> dm = HuggingFaceImageDataModule("data/photos", splits={"val": "validation", "test": None})
    """

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        revision: str | None = None,
        data_files: Any = None,
        splits: dict[str, str | None] | None = None,
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
        self.source = HubSource(path, name, revision, data_files, dict(splits or {}))
        self.targets = TargetColumns.from_arguments(label_column, multi_label, label_separator, target_columns, classes)
        self._images: dict[str, Any] = {}  # the dataset's split name -> its image column

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        column = self.hparams.image_column
        hub = self.read_hub(column, "image_column")
        splits = {}
        for split, table in hub.tables.items():
            name = hub.split_names[split]
            self._images[name] = image_column(table, column, self.source.describe(), name)
            if self.hparams.verify_images:
                self._verify(name)
            splits[split] = Split(hub.rows(split), hub.targets[split])
        return hub.classes, splits

    def load_image(self, sample: HubRow) -> Image.Image:
        return to_rgb(self._images[sample.split][sample.row][self.hparams.image_column])

    def _verify(self, split: str) -> None:
        images = self._images[split]
        for row in range(len(images)):
            try:
                image = images[row][self.hparams.image_column]
                image.load()
            except Exception as err:  # noqa: BLE001 (PIL raises several types for unreadable data)
                raise ConfigError(
                    f"Expected a readable image in `{self.hparams.image_column}` of every row, but "
                    f"{self.source.describe()} split {split!r} row {row} is not one ({err})."
                ) from None

    def predict_sample_names(self) -> list[str]:
        """Each predicted image as the written predictions name it: ``<dataset split>/<row>``, or its file path."""
        return [str(sample) for sample in self._predict_split().samples]


def image_column(table: Any, column: str, dataset: str, split: str) -> Any:
    """The split's ``column`` as images: an ``Image`` feature as it is, paths or bytes cast to one."""
    datasets = import_datasets()
    images = table.select_columns([column])
    if isinstance(images.features[column], datasets.Image):
        return images
    try:
        return images.cast_column(column, datasets.Image())
    except (TypeError, ValueError, NotImplementedError):  # pyarrow's "unsupported cast" is a NotImplementedError
        raise ConfigError(
            f"Expected `image_column` {column!r} of {dataset} split {split!r} to hold images (an Image feature, file "
            f"paths or image bytes), but its feature is {images.features[column]}."
        ) from None


class HuggingFaceTextDataModule(HubData, TextDataModule):
    """Texts of a Hugging Face dataset with their targets: a class per text (a ``ClassLabel``, whose names and order
    are kept, or class names), a set of labels, or numbers, as `HuggingFaceImageDataModule` reads them.

    Args:
        path: a Hub name (``rotten_tomatoes``), a ``save_to_disk`` folder, a data file, or a builder with
            ``data_files``.
        name: the dataset's configuration.
        revision: a Hub branch, tag or commit.
        data_files: a builder's files.
        splits: which of the dataset's splits serve as ``train``, ``val`` and ``test``.
        text_column: the column of texts.
        label_column: the column of the class, or of the label set.
        multi_label: each row has a set of labels.
        label_separator: what joins a row's labels when they are one string.
        target_columns: numeric columns, one regression target each.
        classes: the class names in output order where the label column does not carry them.

    The other arguments are `TextDataModule`'s.
    """

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        revision: str | None = None,
        data_files: Any = None,
        splits: dict[str, str | None] | None = None,
        text_column: str = "text",
        label_column: str = "label",
        multi_label: bool = False,
        label_separator: str = ";",
        target_columns: list[str] | None = None,
        classes: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.source = HubSource(path, name, revision, data_files, dict(splits or {}))
        self.targets = TargetColumns.from_arguments(label_column, multi_label, label_separator, target_columns, classes)

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        column = self.hparams.text_column
        hub = self.read_hub(column, "text_column")
        splits = {}
        for split, table in hub.tables.items():
            texts = [str(text).strip() if text is not None else "" for text in table[column]]
            for row, text in enumerate(texts):
                if not text:
                    raise ConfigError(
                        f"Expected a non-empty `{column}` in every row, but {self.source.describe()} split "
                        f"{hub.split_names[split]!r} row {row} has none."
                    )
            splits[split] = Split(texts, hub.targets[split])
        return hub.classes, splits
