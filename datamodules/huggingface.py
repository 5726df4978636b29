"""`HuggingFaceImageDataModule` and `HuggingFaceTextDataModule`: a dataset of the Hugging Face `datasets` library (a
Hub name, a ``save_to_disk`` folder, Parquet/Arrow/CSV/JSON files or the ``imagefolder`` builder) with its targets:
a class, a set of labels, or numbers."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tlkit.data_request import DataRequest
from tlkit.datamodules.classification import ClassificationDataModule
from tlkit.datamodules.datasets import Split, to_rgb
from tlkit.datamodules.hf_source import HubRow, HubSource, HubSplits, import_datasets, read_hub
from tlkit.datamodules.hf_stream import StreamedImages, StreamSampler, image_stream, refuse_row_reading
from tlkit.datamodules.sampling import ResumableDataLoader
from tlkit.datamodules.tables import TargetColumns
from tlkit.datamodules.text_datamodule import TextDataModule
from tlkit.errors import ConfigError, config_error
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

    def read_hub(self, sample_column: str, sample_argument: str, streaming: bool = False) -> HubSplits:
        if self._hub is None:
            self._hub = read_hub(self.source, self.targets, sample_column, sample_argument, streaming)
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
        streaming: read the dataset as a stream instead of downloading it (datasets too large for the disk): the
            targets are read at setup in one pass over their columns alone; images are read as each epoch needs
            them, shuffled through a buffer, every row once per epoch over all ranks, and resumed mid-epoch exactly.
            Streamed images are not checked before training, the feature cache and `tlkit rank` do not apply, and
            ``val``/``test`` must be splits of the dataset (or ``val_fraction``/``test_fraction`` 0).
        shuffle_buffer: rows in the buffer a streamed training split is shuffled through (with its shards' order);
            larger mixes better, and holds more rows in memory.

    The other arguments are `ClassificationDataModule`'s. Every checkpoint records the dataset's path, config,
    revision, each split's rows and each downloaded split's fingerprint.

    Examples:
        >>> dm = HuggingFaceImageDataModule("beans", label_column="labels")
        >>> dm = HuggingFaceImageDataModule("data/photos", splits={"val": "validation", "test": None})
        >>> dm = HuggingFaceImageDataModule("user/huge-set", revision="v1", streaming=True, shuffle_buffer=10_000)
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
        streaming: bool = False,
        shuffle_buffer: int = 1000,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.source = HubSource(path, name, revision, data_files, dict(splits or {}))
        self.targets = TargetColumns.from_arguments(label_column, multi_label, label_separator, target_columns, classes)
        if shuffle_buffer < 1:
            raise config_error("shuffle_buffer", "a number of rows >= 1", shuffle_buffer)
        if streaming:
            for limit in ("labels_per_class", "train_fraction"):
                if self.hparams[limit] is not None:
                    raise ConfigError(
                        f"Expected `{limit}` unset with `streaming: true`, but got {self.hparams[limit]!r}: a stream "
                        "cannot be subset at random; set `streaming: false`."
                    )
        self._images: dict[str, Any] = {}  # the dataset's split name -> its image column

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        column = self.hparams.image_column
        hub = self.read_hub(column, "image_column", self.hparams.streaming)
        splits = {}
        for split, table in hub.tables.items():
            name = hub.split_names[split]
            if self.hparams.streaming:
                target_columns = list(self.targets.columns().values())
                self._images[name] = image_stream(table, column, target_columns, self._where(name))
                splits[split] = Split(hub.rows(split), hub.targets[split])
                continue
            self._images[name] = image_column(table, column, self.source.describe(), name)
            if self.hparams.verify_images:
                self._verify(name)
            splits[split] = Split(hub.rows(split), hub.targets[split])
        return hub.classes, splits

    def make_splits(self, loaded: dict[str, Split]) -> dict[str, Split]:
        if not self.hparams.streaming:
            return super().make_splits(loaded)
        for split in ("val", "test"):
            if split not in loaded and self.hparams[f"{split}_fraction"] > 0:
                raise ConfigError(
                    f"Expected a {split} split of {self.source.describe()} to stream, but it has none: streamed rows "
                    f"cannot be held out at random; name one in `splits`, or set `{split}_fraction: 0`."
                )
        return loaded  # the dataset's own splits

    def load_image(self, sample: HubRow) -> Image.Image:
        if self.hparams.streaming:
            refuse_row_reading(self._where(sample.split), sample.row)
        return to_rgb(self._images[sample.split][sample.row][self.hparams.image_column])

    # -------------------------------------------------------------------------------------------- streaming
    def _where(self, name: str) -> str:
        return self.source.describe_split(name)

    def dataset(self, split: str, train: bool | None = None, request: DataRequest | None = None) -> Dataset:
        if not self.hparams.streaming:
            return super().dataset(split, train, request)
        transform, _ = self.split_transform(split, train, request)
        serving = self.feature_serving
        if serving is not None and serving.active:
            rank_zero_info(
                f"FeatureCache: the {split} split is streamed, so its features are not cached; the backbone runs "
                "every step."
            )
        name = self._hub.split_names[split]
        return StreamedImages(
            self.hparams.image_column,
            transform,
            self._hub.row_targets,
            len(self.splits[split].labels),
            self._where(name),
        )

    def _sampler(self, split: str, shuffle: bool, pad: bool) -> StreamSampler:
        name = self._hub.split_names[split]
        size = len(self.splits[split].labels)
        return StreamSampler(
            self._images[name], size, self.hparams.seed, shuffle, self.hparams.shuffle_buffer, pad, self._where(name)
        )

    def train_dataloader(self) -> DataLoader:
        if not self.hparams.streaming:
            return super().train_dataloader()
        loader = ResumableDataLoader(
            self.dataset("train"), sampler=self._sampler("train", True, True), **self._loader_options()
        )
        return self.track_train_loader("train", loader)

    def evaluation_loader(self, split: str) -> DataLoader:
        if not self.hparams.streaming:
            return super().evaluation_loader(split)
        if split not in self.splits:
            return []
        return DataLoader(
            self.dataset(split, train=False), sampler=self._sampler(split, False, True), **self._loader_options()
        )

    def predict_dataloader(self) -> DataLoader:
        if not self.hparams.streaming or self.hparams.predict_dir is not None:
            return super().predict_dataloader()
        split = self.test_split
        hp = self.hparams
        # Each row once, named by its index in the split (`predict_sample_names`), on however many ranks.
        return DataLoader(
            self.dataset(split, train=False),
            sampler=self._sampler(split, False, False),
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
        )

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
