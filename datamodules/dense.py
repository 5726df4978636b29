"""`DenseDataModule`: the base of datamodules for dense tasks, whose targets are per pixel (masks) or per object
(boxes) rather than per image.

What they share: the data is checked in full before training (every mask, every box); splits held out at random;
training transforms move the targets with the image (`torchvision.transforms.v2`); evaluation and ``predict``
resize the whole image (no centre crop), so what the model outputs maps back onto the image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from tlkit.backbones import DataConfig
from tlkit.datamodules._splits import train_val_test
from tlkit.datamodules.datasets import Split, load_checked, open_rgb
from tlkit.datamodules.image_datamodule import ImageDataModule
from tlkit.errors import config_error
from tlkit.randomness import sample_seed, seeded
from tlkit.tasks.segmentation import IGNORE_INDEX


def whole_image_transform(config: DataConfig) -> v2.Compose:
    """Evaluation's (and an exported model's caller's) input: the whole image resized to ``image_size`` square with
    PIL's resampling, scaled to [0, 1] and normalised."""
    interpolation = v2.InterpolationMode(config.interpolation)
    return v2.Compose(
        [v2.Resize((config.image_size, config.image_size), interpolation=interpolation), *_normalised(config)]
    )


def _normalised(config: DataConfig) -> list[Any]:
    """The last steps of every dense transform: the PIL image as a float tensor in [0, 1], normalised."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(config.mean, config.std)]


def augmenting_transform(config: DataConfig, min_crop_scale: float, hflip: bool, boxes: bool) -> v2.Compose:
    """Training's transform with augmentation: a random resized crop (keeping ``min_crop_scale`` of the area or
    more), an optional flip, colour jitter; masks follow every geometric step with nearest-neighbour interpolation,
    boxes are moved, clipped and (``boxes``) dropped where a crop leaves less than 2 pixels of them. Geometry runs on
    the PIL image with PIL's resampling, as evaluation does."""
    interpolation = v2.InterpolationMode(config.interpolation)
    steps: list[Any] = [
        v2.RandomResizedCrop(config.image_size, scale=(min_crop_scale, 1.0), interpolation=interpolation)
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05))
    if boxes:
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=2)]
    return v2.Compose([*steps, *_normalised(config)])


class DenseDataModule(ImageDataModule):
    """Base of the segmentation and detection datamodules: subclasses implement `load_splits` (class names, and
    splits whose samples are image paths and whose labels are the targets' files or records), `check_split` and
    `pair_dataset`.

    Args:
        ignore_index: the mask value of unlabelled pixels (segmentation; the model's ``task.ignore_index`` must
            match).
        train_fraction: keep only this fraction of the training images.

    The other arguments are `ImageDataModule`'s (``crop_pct`` does not apply: whole images are resized).
    """

    base_class_only = True
    classes_hint = "a dense task needs two classes or more"

    def __init__(self, *, ignore_index: int = IGNORE_INDEX, train_fraction: float | None = None, **kwargs) -> None:
        if not 0 <= ignore_index <= 255:
            raise config_error("ignore_index", "a mask value in [0, 255]", ignore_index)
        if train_fraction is not None and not 0.0 < train_fraction <= 1.0:
            raise config_error("train_fraction", "in (0, 1]", train_fraction)
        super().__init__(**kwargs)

    # ----------------------------------------------------------------------------------------- for subclasses
    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        raise NotImplementedError

    def check_split(self, split: Split, classes: list[str]) -> None:
        """Raise a one-line ConfigError at the first target that does not fit its image or the classes."""
        raise NotImplementedError

    def pair_dataset(self, split: Split, transform: Any) -> Dataset:
        """(image, target) pairs of ``split``, transformed together by ``transform``."""
        raise NotImplementedError

    def train_transform(self, config: DataConfig) -> Any:
        """The training transform: `augmenting_transform` (``augment: false``: evaluation's)."""
        hp = self.hparams
        if not hp.augment:
            return whole_image_transform(config)
        return augmenting_transform(config, hp.min_crop_scale, hp.hflip, boxes=self.target_kind == "boxes")

    #: How samples become a batch (a plain function, so worker processes can take it): stacked by default.
    collate = staticmethod(torch.utils.data.default_collate)

    # ----------------------------------------------------------------------------------------------- the data
    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        classes, splits = self.load_splits()
        for split in splits.values():
            self.check_split(split, classes)
        return classes, splits

    def make_splits(self, loaded: dict[str, Split]) -> dict[str, Split]:
        """``val`` and ``test`` held out of ``train`` at random where the data has none of its own, then the training
        split limited to ``train_fraction`` (`train_val_test` for targets that are neither classes nor label sets)."""
        hp = self.hparams
        return train_val_test(
            loaded, self.classes, hp.val_fraction, hp.test_fraction, hp.seed, None, hp.train_fraction, self.target_kind
        )

    def training_targets(self) -> None:
        return None  # a dense task learns nothing of its targets before training

    def dataset(self, split: str, train: bool | None = None, request: Any = None) -> Dataset:
        config = self.resolve_data_config(request)
        use_train = split == "train" if train is None else train
        transform = self.train_transform(config) if use_train else whole_image_transform(config)
        return self.pair_dataset(self.splits[split], transform)

    # ---------------------------------------------------------------------------------------------- loaders
    def _loader_options(self) -> dict[str, Any]:
        return {**super()._loader_options(), "collate_fn": self.collate}

    def train_dataloader(self) -> DataLoader:
        return self.training_loader("train", self.dataset("train"))

    def val_dataloader(self) -> DataLoader:
        return self.evaluation_loader("val")

    def predict_dataloader(self) -> DataLoader:
        """The predict folder's images (or the test split's), resized whole: what the model outputs maps back
        onto them."""
        transform = whole_image_transform(self.resolve_data_config())
        dataset = ImagesOnly(self._predict_split().samples, transform, self.predict_load())
        hp = self.hparams
        return DataLoader(dataset, batch_size=hp.batch_size, num_workers=hp.num_workers, pin_memory=hp.pin_memory)


class PairDataset(Dataset):
    """(image, target) pairs of a split of image paths, transformed together (`torchvision.transforms.v2` moves
    the target with the image); subclasses say how a sample's target is read (`target`) and handed out (`plain`)."""

    def __init__(self, split: Split, transform: Any, load: Callable[[Any], Any] = open_rgb) -> None:
        self.split, self.transform, self.load = split, transform, load

    def __len__(self) -> int:
        return len(self.split.samples)

    def target(self, index: int, image: Any) -> Any:
        """Sample ``index``'s target as tv_tensors, for its opened ``image``."""
        raise NotImplementedError

    def plain(self, target: Any) -> Any:
        """The transformed target as plain tensors."""
        raise NotImplementedError

    def __getitem__(self, index: int):
        image = load_checked(self.load, self.split.samples[index])
        target = self.target(index, image)
        with seeded(sample_seed(index)):  # a training index carries its augmentation seed
            image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), self.plain(target)


class ImagesOnly(Dataset):
    """Image files, transformed: what ``predict`` reads."""

    def __init__(self, paths: list[Any], transform: Any, load: Callable[[Any], Any] = open_rgb) -> None:
        self.paths, self.transform, self.load = paths, transform, load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_checked(self.load, self.paths[index])).as_subclass(torch.Tensor)
