"""Semantic segmentation data: images with index masks (a PNG per image whose pixel values are class indices).

`MaskFolderDataModule` reads the usual layout::

    root/classes.txt          one class name per line, in index order (line 1 is class 0, e.g. background)
    root/images/<name>.jpg    any image format
    root/masks/<name>.png     same name stem, same size; pixel = class index, 255 (``ignore_index``) = unlabelled

or the same three entries under ``root/train``, ``root/val`` and ``root/test`` for splits of one's own. Every mask
is read and checked once before training: one line names the first file with a value outside the classes, a size
other than its image's, or no image or mask to pair with. Augmentation (``torchvision.transforms.v2``) moves the
mask with the image: a random resized crop (nearest-neighbour for the mask), an optional flip, colour jitter on the
image alone. Evaluation and ``predict`` resize the whole image, so a predicted mask maps back onto it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from tlkit.backbones import DataConfig
from tlkit.datamodules._splits import random_split
from tlkit.datamodules.datasets import Split, open_rgb
from tlkit.datamodules.folders import IMAGE_EXTENSIONS, check_folder
from tlkit.datamodules.image_datamodule import ImageDataModule
from tlkit.errors import ConfigError, config_error
from tlkit.protocols import TargetKind
from tlkit.randomness import sample_seed, seeded

IGNORE_INDEX = 255


def read_mask(path: Any) -> np.ndarray:
    """An index mask file as an (H, W) uint8 array of class indices (a palette PNG's indices, not its colours)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16"):
            raise ConfigError(
                f"Expected mask {str(path)!r} to be a single-channel index image (mode L or P: pixel = class index), "
                f"but it is mode {image.mode}."
            )
        return np.asarray(image).astype(np.uint8) if image.mode in ("P", "L") else np.asarray(image)


def segmentation_transform(config: DataConfig, train: bool, augment: bool, min_crop_scale: float, hflip: bool):
    """The joint image-and-mask transform (`torchvision.transforms.v2`: the mask follows every geometric step with
    nearest-neighbour interpolation; colour steps and normalisation touch the image alone)."""
    size = config.image_size
    interpolation = v2.InterpolationMode(config.interpolation)
    steps: list[Any] = []
    if train and augment:
        steps.append(v2.RandomResizedCrop(size, scale=(min_crop_scale, 1.0), interpolation=interpolation))
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05))
    else:
        steps.append(v2.Resize((size, size), interpolation=interpolation))
    # Geometry on the PIL image (PIL's own resampling, as an exported model's caller does it), then to a tensor.
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(config.mean, config.std)]
    return v2.Compose(steps)


class SegmentationDataset(Dataset):
    """(image, mask) pairs from file paths, transformed together; the mask comes out as (H, W) int64."""

    def __init__(self, split: Split, transform: Any) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split.samples)

    def __getitem__(self, index: int):
        image = open_rgb(self.split.samples[index])
        mask = tv_tensors.Mask(torch.from_numpy(read_mask(self.split.labels[index]).astype(np.int64)))
        with seeded(sample_seed(index)):  # a training index carries its augmentation seed
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class SegmentationDataModule(ImageDataModule):
    """Base of segmentation datamodules: subclasses implement `load_splits` (class names, and splits whose samples
    are image paths and whose labels are mask paths); this class checks every mask and serves (image, mask)
    batches.

    Args:
        ignore_index: the mask value of unlabelled pixels (the model's ``task.ignore_index`` must match).
        train_fraction: keep only this fraction of the training images.

    The other arguments are `ImageDataModule`'s (``crop_pct`` does not apply: whole images are resized).
    """

    base_class_only = True
    classes_hint = "a segmenter needs two classes or more (background counts)"

    def __init__(self, *, ignore_index: int = IGNORE_INDEX, train_fraction: float | None = None, **kwargs) -> None:
        if not 0 <= ignore_index <= 255:
            raise config_error("ignore_index", "a mask value in [0, 255]", ignore_index)
        if train_fraction is not None and not 0.0 < train_fraction <= 1.0:
            raise config_error("train_fraction", "in (0, 1]", train_fraction)
        super().__init__(**kwargs)

    @property
    def target_kind(self) -> TargetKind:
        return "masks"

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        raise NotImplementedError

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        classes, splits = self.load_splits()
        for split in splits.values():
            check_masks(split, len(classes), self.hparams.ignore_index)
        return classes, splits

    def make_splits(self, loaded: dict[str, Split]) -> dict[str, Split]:
        hp = self.hparams
        train, val_fraction = loaded["train"], hp.val_fraction
        if "test" not in loaded:
            rest, held = random_split(len(train.samples), hp.test_fraction, hp.seed)
            train, loaded["test"] = train.subset(rest), train.subset(held)
            val_fraction = val_fraction / (1.0 - hp.test_fraction)  # both fractions are of the whole
        if "val" not in loaded:
            rest, held = random_split(len(train.samples), val_fraction, hp.seed + 1)
            train, loaded["val"] = train.subset(rest), train.subset(held)
        if hp.train_fraction is not None:
            keep, _ = random_split(len(train.samples), 1.0 - hp.train_fraction, hp.seed + 2)
            train = train.subset(keep)
        loaded["train"] = train
        return loaded

    def training_targets(self) -> None:
        return None  # a segmentation task learns nothing of its masks before training

    def dataset(self, split: str, train: bool | None = None, request: Any = None) -> Dataset:
        config = self.resolve_data_config(request)
        use_train = split == "train" if train is None else train
        hp = self.hparams
        transform = segmentation_transform(config, use_train, hp.augment, hp.min_crop_scale, hp.hflip)
        return SegmentationDataset(self.splits[split], transform)

    def train_dataloader(self) -> DataLoader:
        return self.training_loader("train", self.dataset("train"))

    def val_dataloader(self) -> DataLoader:
        return self.evaluation_loader("val")

    def predict_dataloader(self) -> DataLoader:
        """The predict folder's images (or the test split's), resized whole: their masks map back onto them."""
        split = self._predict_split()
        transform = segmentation_transform(self.resolve_data_config(), False, False, 1.0, False)
        dataset = _ImagesOnly(split.samples, transform)
        hp = self.hparams
        return DataLoader(dataset, batch_size=hp.batch_size, num_workers=hp.num_workers, pin_memory=hp.pin_memory)


class _ImagesOnly(Dataset):
    def __init__(self, paths: list[Any], transform: Any) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(open_rgb(self.paths[index])).as_subclass(torch.Tensor)


def check_masks(split: Split, num_classes: int, ignore_index: int) -> None:
    """Every mask of ``split`` against its image: the same size, and values that are class indices or
    ``ignore_index``; the first problem is one line naming the file."""
    for image_path, mask_path in zip(split.samples, split.labels):
        mask = read_mask(mask_path)
        with Image.open(image_path) as image:
            size = image.size
        if (mask.shape[1], mask.shape[0]) != size:
            raise ConfigError(
                f"Expected mask {str(mask_path)!r} to have its image's size {size[0]}x{size[1]}, but it is "
                f"{mask.shape[1]}x{mask.shape[0]}."
            )
        values = np.unique(mask)
        bad = [int(v) for v in values if v >= num_classes and v != ignore_index]
        if bad:
            raise ConfigError(
                f"Expected the values of mask {str(mask_path)!r} to be class indices 0-{num_classes - 1} or "
                f"{ignore_index} (ignored), but it holds {', '.join(map(str, bad[:5]))}."
            )


def read_mask_folder(folder: Path, classes: list[str]) -> Split:
    """``folder/images`` paired with ``folder/masks`` by name stem; one line names the first unpaired file."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    check_folder(images_dir, "the images folder")
    check_folder(masks_dir, "the masks folder")
    images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() == ".png"}
    for stem, path in images.items():
        if stem not in masks:
            raise ConfigError(f"Expected a mask {str(masks_dir / (stem + '.png'))!r} for image {str(path)!r}.")
    for stem, path in masks.items():
        if stem not in images:
            raise ConfigError(f"Expected an image named {stem}.* in {str(images_dir)!r} for mask {str(path)!r}.")
    if not images:
        raise ConfigError(f"Expected images in {str(images_dir)!r}, but it holds none.")
    return Split([str(images[s]) for s in images], [str(masks[s]) for s in images])


def read_classes(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(
            f"Expected {str(path)!r}: the class names, one per line in index order (line 1 is class 0), or "
            "`classes` in the config."
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class MaskFolderDataModule(SegmentationDataModule):
    """Images and index masks in folders (the layout above).

    Args:
        root: the folder holding ``images/``, ``masks/`` and ``classes.txt`` (or ``train/``, ``val/``, ``test/``
            each holding ``images/`` and ``masks/``, with ``classes.txt`` beside them).
        classes: the class names in index order, instead of ``classes.txt``.

    The other arguments are `SegmentationDataModule`'s and `ImageDataModule`'s.

    Examples:
        >>> dm = MaskFolderDataModule(root="data/scenes", image_size=256)
    """

    def __init__(self, *, root: str, classes: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)

    def describe_source(self) -> str:
        return repr(self.hparams.root)

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        root = Path(self.hparams.root).expanduser()
        check_folder(root, "`root`")
        classes = list(self.hparams.classes or read_classes(root / "classes.txt"))
        if (root / "images").is_dir():
            return classes, {"train": read_mask_folder(root, classes)}
        present = [name for name in ("train", "val", "test") if (root / name).is_dir()]
        if "train" not in present:
            raise ConfigError(f"Expected {str(root)!r} to hold images/ and masks/, or train/ (with val/, test/).")
        return classes, {name: read_mask_folder(root / name, classes) for name in present}
