"""`ClassificationDataModule`: splits, limited labels, transforms and loaders shared by the image datamodules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tlkit.backbones import DataConfig
from tlkit.datamodules._attached import attached_model, resolve_data_config
from tlkit.datamodules._folders import scan_images
from tlkit.datamodules._splits import limit_labels, stratified_split
from tlkit.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader, ResumableTrainLoaders
from tlkit.datamodules.transforms import eval_transform, train_transform
from tlkit.errors import ConfigError, config_error, refuse_base_class
from tlkit.feature_cache import data_fingerprint
from tlkit.randomness import sample_seed, seeded


def open_rgb(path: Any) -> Image.Image:
    """Open an image file as 8-bit RGB, scaling 16- and 32-bit greyscale to the full 8-bit range.

    PIL's ``convert("RGB")`` clips 16-bit values above 255 instead of scaling them, so a 16-bit PNG would become
    nearly all white (only 2 grey levels survive in a typical scan).
    """
    with Image.open(path) as image:
        if image.mode.startswith("I"):  # "I;16", "I;16B", "I" (32-bit): scale by the type's range
            pixels = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or pixels.max() <= 65535 else float(pixels.max())
            image = Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8), mode="L")
        elif image.mode == "F":
            pixels = np.asarray(image, dtype=np.float64)
            low, high = float(pixels.min()), float(pixels.max())
            image = Image.fromarray(((pixels - low) / max(high - low, 1e-12) * 255).round().astype(np.uint8), mode="L")
        return image.convert("RGB")


@dataclass
class Split:
    """Samples (file paths or in-memory images) and their integer labels."""

    samples: list[Any]
    labels: list[int]

    def subset(self, indices: Sequence[int]) -> Split:
        return Split([self.samples[i] for i in indices], [self.labels[i] for i in indices])


class ImageDataset(Dataset):
    """Samples opened with ``load`` (a path or an in-memory image to an RGB PIL image), then ``transform``ed."""

    def __init__(self, split: Split, load: Callable[[Any], Image.Image], transform: Callable | None) -> None:
        self.split, self.load, self.transform = split, load, transform

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int):
        image = self.load(self.split.samples[index])
        if self.transform is not None:
            with seeded(sample_seed(index)):  # a training index carries its augmentation seed
                image = self.transform(image)
        return image, self.split.labels[index]


class ClassificationDataModule(ResumableTrainLoaders, LightningDataModule):
    """Base for labelled image datamodules: subclasses implement `load_splits`; this class does the rest.

    Transforms come from the backbone's data config (the attached model's ``backbone.data_config``, found through the
    trainer), optionally overridden by ``image_size`` and ``crop_pct``.

    Args:
        batch_size: images per batch.
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory for faster GPU transfer.
        persistent_workers: keep workers alive between epochs (needs ``num_workers > 0``).
        image_size: override the backbone's input size.
        crop_pct: override the backbone's centre-crop fraction for evaluation (1.0 = no crop).
        augment: use the small-data augmentation preset (random resized crop, flip, TrivialAugment) for training.
        hflip: include the horizontal flip in the preset.
        val_fraction: fraction of each class held out for validation when there is no validation folder.
        test_fraction: fraction of each class held out for testing when there is no test folder.
        labels_per_class: keep only this many labelled training images per class (limited-label experiments).
        train_fraction: keep only this fraction of each class's training images.
        seed: seed for every split and subset.
        predict_dir: a folder of images to label with ``tlkit predict`` (any layout); default: the test split.
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        image_size: int | None = None,
        crop_pct: float | None = None,
        augment: bool = True,
        hflip: bool = True,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        labels_per_class: int | None = None,
        train_fraction: float | None = None,
        seed: int = 0,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        refuse_base_class(self, "data", "tlkit.datamodules")
        if batch_size < 1:
            raise config_error("batch_size", "an integer >= 1", batch_size)
        if persistent_workers and num_workers == 0:
            raise config_error("persistent_workers", "false when num_workers is 0", persistent_workers)
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise config_error(name, "in [0, 1)", value)
        if val_fraction + test_fraction >= 1.0:
            raise config_error("val_fraction + test_fraction", "below 1", val_fraction + test_fraction)
        if labels_per_class is not None and train_fraction is not None:
            raise config_error("labels_per_class", "unset when train_fraction is set", labels_per_class)
        if labels_per_class is not None and labels_per_class < 1:
            raise config_error("labels_per_class", "an integer >= 1", labels_per_class)
        if train_fraction is not None and not 0.0 < train_fraction <= 1.0:
            raise config_error("train_fraction", "in (0, 1]", train_fraction)
        if crop_pct is not None and not 0.0 < crop_pct <= 1.0:
            raise config_error("crop_pct", "in (0, 1]", crop_pct)
        self.save_hyperparameters()
        self.classes: list[str] = []
        self.splits: dict[str, Split] = {}
        self.data_config: DataConfig | None = None
        self._loaded: tuple[list[str], dict[str, Split]] | None = None
        self._predict: Split | None = None  # the predict_dir's images, once scanned

    # ----------------------------------------------------------------------------------------- for subclasses
    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        """Return (class names, splits); ``train`` is required, ``val``/``test`` are split off ``train`` if missing."""
        raise NotImplementedError

    def load_image(self, sample: Any) -> Image.Image:
        """Turn one stored sample into an RGB PIL image (default: open a file path)."""
        return open_rgb(sample)

    # --------------------------------------------------------------------------------------------- common
    @property
    def num_classes(self) -> int:
        return len(self._load()[0])

    def class_names(self) -> list[str]:
        """Class names in label order (loads and checks the data on first use)."""
        return list(self._load()[0])

    def _load(self) -> tuple[list[str], dict[str, Split]]:
        # Loading validates every file, so it runs once, whether `num_classes` or `setup` asks first.
        if self._loaded is None:
            classes, splits = self.load_splits()
            if len(classes) < 2:
                raise ConfigError(
                    f"Expected at least 2 classes, but got {len(classes)} ({', '.join(classes) or 'none'}) "
                    f"in {self.describe_source()}: a classifier needs one folder per class."
                )
            self._loaded = classes, splits
        return self._loaded

    def describe_source(self) -> str:
        """Where the data comes from, for error messages (a folder for folder-based datamodules)."""
        return type(self).__name__

    def resolve_data_config(self) -> DataConfig:
        """The attached backbone's data config (ImageNet defaults without one), with this module's overrides."""
        return resolve_data_config(self)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        classes, loaded = self._load()
        self.classes, splits = classes, dict(loaded)
        train = splits["train"]
        val_fraction = hp.val_fraction
        if "test" not in splits:
            rest, held = stratified_split(train.labels, hp.test_fraction, hp.seed)
            train, splits["test"] = train.subset(rest), train.subset(held)
            # Both fractions are of the whole folder: rescale val's to what is left after the test split.
            val_fraction = hp.val_fraction / (1.0 - hp.test_fraction)
        if "val" not in splits:
            rest, held = stratified_split(train.labels, val_fraction, hp.seed + 1)
            train, splits["val"] = train.subset(rest), train.subset(held)
        keep = limit_labels(train.labels, self.classes, hp.seed, hp.labels_per_class, hp.train_fraction)
        splits["train"] = train.subset(keep)
        self.splits = splits

    def dataset(self, split: str, train: bool | None = None) -> Dataset:
        """The named split as a Dataset; ``train`` picks the training or evaluation transform (default: by name)."""
        config = self.resolve_data_config()
        use_train = split == "train" if train is None else train
        if use_train:
            transform = train_transform(config, self.hparams.augment, self.hparams.hflip)
        else:
            transform = eval_transform(config)
        dataset = ImageDataset(self.splits[split], self.load_image, transform)
        return self._maybe_cached(dataset, split, transform, random=use_train and self.hparams.augment)

    def _maybe_cached(self, dataset: ImageDataset, split: str, transform: Any, random: bool) -> Dataset:
        """Backbone features instead of images when the attached model caches them and the transform allows it."""
        model = attached_model(self)
        cache = getattr(model, "feature_cache", None)
        if cache is None:
            return dataset
        if random:
            rank_zero_info(
                f"FeatureCache: the {split} transform is random (augment: true), so {split} features are not cached "
                "and the backbone runs every step; set augment: false to cache them."
            )
            return dataset
        data = self.splits[split]
        return cache.dataset(
            model.backbone, dataset, data_fingerprint(data.samples, data.labels), repr(transform), name=split
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        dataset = self.dataset(split)
        options = dict(
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers,
        )
        if shuffle:
            loader = ResumableDataLoader(dataset, sampler=EpochShuffleSampler(len(dataset), hp.seed), **options)
            return self.track_train_loader(split, loader)
        return DataLoader(dataset, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _predict_split(self) -> Split:
        if self.hparams.predict_dir is None:
            return self.splits["test"]
        # Scanned (and every image verified) once: the writer's sample names and the loader share it.
        if self._predict is None:
            paths = scan_images(Path(self.hparams.predict_dir).expanduser())
            self._predict = Split(paths, [-1] * len(paths))  # -1: no label
        return self._predict

    def predict_sample_names(self) -> list[str]:
        """What each predicted sample is called in the written predictions: its file path, or ``test/<index>``."""
        samples = self._predict_split().samples
        return [str(s) if isinstance(s, (str, Path)) else f"test/{i}" for i, s in enumerate(samples)]

    def predict_dataloader(self) -> DataLoader:
        split = self._predict_split()
        # Files in a predict folder are opened as files, whatever this datamodule stores its own samples as.
        load = self.load_image if self.hparams.predict_dir is None else open_rgb
        dataset = ImageDataset(split, load, eval_transform(self.resolve_data_config()))
        hp = self.hparams
        return DataLoader(dataset, batch_size=hp.batch_size, num_workers=hp.num_workers, pin_memory=hp.pin_memory)
