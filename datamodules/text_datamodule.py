"""`TextDataModule`: labelled texts for a text backbone, tokenized by the backbone's own tokenizer.

The texts are split like the image datamodules' images (seeded, stratified, limited-label options) and tokenized a
batch at a time, padded to the batch's longest text (dynamic padding). The tokenizer and its maximum length come from
the attached model's `DataRequest` (a `TextConfig`), so the datamodule needs no model name of its own.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, default_collate

from tlkit.backbones import TextConfig
from tlkit.data_request import DataRequest, Features
from tlkit.datamodules._attached import model_request
from tlkit.datamodules._labelled_data import LabelledData, check_label_limits, check_split_arguments
from tlkit.datamodules._served_features import FeatureServingSlot
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader, ResumableTrainLoaders
from tlkit.errors import ConfigError, config_error, refuse_base_class
from tlkit.features import label_bytes


class TextDataset(Dataset):
    """(text, label) pairs of a `Split` whose samples are strings."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.split.samples[index], self.split.labels[index]


class Tokenize:
    """Collates (text, label) samples into (tokenized batch, labels), padded to the batch's longest text.

    Samples a `FeatureServing` serves as cached `Features` are collated as they are.
    """

    def __init__(self, config: TextConfig, max_length: int) -> None:
        self.tokenizer, self.max_length = config.tokenizer, max_length

    def __call__(self, samples: list[tuple[Any, int]]) -> tuple[Any, torch.Tensor]:
        if isinstance(samples[0][0], Features):
            return default_collate(samples)
        texts = [text for text, _ in samples]
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return dict(encoded), default_collate([label for _, label in samples])


def texts_fingerprint(split: Split) -> str:
    """Hash of a split's texts and labels (the feature cache's data key)."""
    digest = hashlib.sha256()
    for text, label in zip(split.samples, split.labels):
        digest.update(text.encode())
        digest.update(label_bytes(label))
    return digest.hexdigest()


class TextDataModule(FeatureServingSlot, LabelledData, ResumableTrainLoaders, LightningDataModule):
    """Base for labelled text datamodules: subclasses implement `load_data`; splits, tokenization, feature serving
    and resumable loaders are done here.

    Args:
        batch_size: texts per batch.
        num_workers: DataLoader worker processes.
        max_length: tokens kept per text (longer texts are truncated); at most the backbone's limit.
        val_fraction: fraction of each class held out for validation when the data has no validation split.
        test_fraction: fraction of each class held out for testing when the data has no test split.
        labels_per_class: keep only this many labelled training texts per class (limited-label experiments).
        train_fraction: keep only this fraction of each class's training texts.
        seed: seed for every split and subset.
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        max_length: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        labels_per_class: int | None = None,
        train_fraction: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        refuse_base_class(self, "data", "tlkit.datamodules")
        check_split_arguments(batch_size, val_fraction, test_fraction)
        if max_length < 2:
            raise config_error("max_length", "an integer >= 2 (room for the special tokens)", max_length)
        check_label_limits(labels_per_class, train_fraction)
        self.save_hyperparameters()
        self.classes: list[str] = []
        self.splits: dict[str, Split] = {}
        self._loaded: tuple[list[str], dict[str, Split]] | None = None

    # ----------------------------------------------------------------------------------------- for subclasses
    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        """Return (class names, splits of texts); ``train`` is required, ``val``/``test`` are held out of it if
        missing. Called once."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- tokenizing
    def collate(self, request: DataRequest | None = None) -> Tokenize:
        """The batch tokenizer for the attached model's backbone (or ``request``'s)."""
        request = request if request is not None else model_request(self)
        config = request.input_config
        if not isinstance(config, TextConfig):
            got = "no model" if config is None else "a model whose backbone reads images"
            raise ConfigError(
                f"Expected a text backbone (`backbone: hf:<name or folder>`) for {type(self).__name__}, but got {got}."
            )
        return Tokenize(config, min(self.hparams.max_length, config.max_length))

    def dataset(self, split: str, request: DataRequest | None = None) -> Dataset:
        """The named split; served as the backbone's cached features while a serving is handed in
        (`serve_features`)."""
        request = request if request is not None else model_request(self)
        dataset = TextDataset(self.splits[split])
        serving = self.feature_serving
        if serving is None or not serving.active:
            return dataset
        collate = self.collate(request)
        key = texts_fingerprint(self.splits[split])
        return serving.dataset(dataset, key, f"max_length={collate.max_length}", name=split, collate_fn=collate)

    # --------------------------------------------------------------------------------------------- loaders
    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        sampler = EpochShuffleSampler(len(dataset), self.hparams.seed)
        loader = ResumableDataLoader(
            dataset,
            sampler=sampler,
            batch_size=self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            collate_fn=self.collate(),
        )
        return self.track_train_loader("train", loader)

    def evaluation_loader(self, split: str) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            self.dataset(split), batch_size=hp.batch_size, num_workers=hp.num_workers, collate_fn=self.collate()
        )

    def val_dataloader(self) -> DataLoader:
        return self.evaluation_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.evaluation_loader("test")

    def predict_sample_names(self) -> list[str]:
        """Each predicted text as the written predictions name it: its first 80 characters."""
        return [text if len(text) <= 80 else text[:77] + "..." for text in self.splits["test"].samples]
