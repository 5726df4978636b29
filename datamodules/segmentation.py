"""Semantic segmentation data: images with index masks (a PNG per image whose pixel values are class indices).

`MaskFolderDataModule` reads the usual layout::

    root/classes.txt          one class name per line, in index order (line 1 is class 0, e.g. background)
    root/images/<name>.jpg    any image format
    root/masks/<name>.png     same name stem, same size; pixel = class index, 255 (``ignore_index``) = unlabelled

or the same three entries under ``root/train``, ``root/val`` and ``root/test`` for splits of one's own. Every mask
is read and checked once before training: one line names the first file with a value outside the classes, a size
other than its image's, or no image or mask to pair with. Augmentation (``torchvision.transforms.v2``) moves the
mask with the image (`DenseDataModule`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from tlkit.datamodules.datasets import Split, open_rgb
from tlkit.datamodules.dense import DenseDataModule, PairDataset
from tlkit.datamodules.folders import IMAGE_EXTENSIONS, check_folder
from tlkit.datamodules.medical import MedicalReading, label_slice
from tlkit.datamodules.nifti import VolumeSlice, is_nifti, same_grid
from tlkit.errors import ConfigError
from tlkit.protocols import StoredMask, TargetKind


def coco_mask(target: dict[str, Any]) -> np.ndarray:
    """An image's index mask from its annotations' segmentations (`read_coco`'s ``segments``), in order."""
    from pycocotools import mask as rle

    height, width = target["height"], target["width"]
    mask = np.zeros((height, width), dtype=np.uint8)
    for value, segmentation in target["segments"]:
        if isinstance(segmentation, list):  # polygons
            encoded = rle.merge(rle.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            encoded = rle.frPyObjects(segmentation, height, width)
        else:
            encoded = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
        mask[rle.decode(encoded) > 0] = value
    return mask


def read_mask(path: Any) -> np.ndarray:
    """An index mask file as an (H, W) array of class indices (a palette PNG's indices, not its colours), the mask a
    COCO image's annotations draw (`coco_mask`), or a slice of a NIfTI label volume."""
    if isinstance(path, dict):
        return coco_mask(path)
    if isinstance(path, VolumeSlice):
        return label_slice(path)
    if isinstance(path, StoredMask):
        return path.array()
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ConfigError(
                f"Expected mask {str(path)!r} to be a single-channel 8-bit index image (mode L or P: pixel = class "
                f"index), but it is mode {image.mode}."
            )
        return np.asarray(image).astype(np.uint8)


class SegmentationDataset(PairDataset):
    """(image, mask) pairs; the mask comes out as (H, W) int64."""

    def target(self, index: int, image: Any) -> tv_tensors.Mask:
        return tv_tensors.Mask(torch.from_numpy(read_mask(self.split.labels[index]).astype(np.int64)))

    def plain(self, target: tv_tensors.Mask) -> torch.Tensor:
        return target.as_subclass(torch.Tensor)


def check_masks(
    split: Split, num_classes: int, ignore_index: int, load: Callable[[Any], Image.Image] = open_rgb
) -> None:
    """Every mask of ``split`` against its image (opened with ``load``): the same size, and values that are class
    indices or ``ignore_index``; the first problem is one line naming the file."""
    for image_path, mask_path in zip(split.samples, split.labels):
        mask = read_mask(mask_path)
        size = load(image_path).size
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


def read_mask_folder(folder: Path, classes: list[str], medical: MedicalReading | None = None) -> Split:
    """``folder/images`` paired with ``folder/masks`` by name stem; one line names the first unpaired file."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    check_folder(images_dir, "the images folder")
    check_folder(masks_dir, "the masks folder")
    images = {_stem(p): p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS or is_nifti(p)}
    masks = {_stem(p): p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() == ".png" or is_nifti(p)}
    for stem, path in images.items():
        if stem not in masks:
            expected = f"{stem}.nii.gz" if is_nifti(path) else f"{stem}.png"
            raise ConfigError(f"Expected a mask {str(masks_dir / expected)!r} for image {str(path)!r}.")
    for stem, path in masks.items():
        if stem not in images:
            raise ConfigError(f"Expected an image named {stem}.* in {str(images_dir)!r} for mask {str(path)!r}.")
    if not images:
        raise ConfigError(f"Expected images in {str(images_dir)!r}, but it holds none.")
    samples: list[Any] = []
    labels: list[Any] = []
    for stem, image in images.items():
        if is_nifti(image) != is_nifti(masks[stem]):
            raise ConfigError(
                f"Expected a NIfTI image and its NIfTI label volume, or an image and a PNG mask, but got "
                f"{str(image)!r} with {str(masks[stem])!r}."
            )
        if not is_nifti(image):
            samples.append(str(image))
            labels.append(str(masks[stem]))
            continue
        problem = same_grid(image, masks[stem])
        if problem is not None:
            raise ConfigError(f"Expected label volume {str(masks[stem])!r} on its image's grid, but it is {problem}.")
        # Slices of the image and of its labels, cut alike (the axis is the datamodule's ``slice_axis``).
        cuts = (medical or MedicalReading()).nifti.slices(image)
        samples += cuts
        labels += [VolumeSlice(masks[stem], cut.axis, cut.index) for cut in cuts]
    return Split(samples, labels)


def _stem(path: Path) -> str:
    """A file's name without its suffix (both of ``.nii.gz``): what pairs an image with its mask."""
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def read_classes(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(
            f"Expected {str(path)!r}: the class names, one per line in index order (line 1 is class 0), or "
            "`classes` in the config."
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class MaskFolderDataModule(DenseDataModule):
    """Images and index masks in folders (the layout above).

    Args:
        root: the folder holding ``images/``, ``masks/`` and ``classes.txt`` (or ``train/``, ``val/``, ``test/``
            each holding ``images/`` and ``masks/``, with ``classes.txt`` beside them).
        classes: the class names in index order, instead of ``classes.txt``.

    The other arguments are `DenseDataModule`'s and `ImageDataModule`'s.

    Examples:
        >>> dm = MaskFolderDataModule(root="data/scenes", image_size=256)
    """

    def __init__(self, *, root: str, classes: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)

    classes_hint = "a segmenter needs two classes or more (background counts)"

    @property
    def target_kind(self) -> TargetKind:
        return "masks"

    def describe_source(self) -> str:
        return repr(self.hparams.root)

    def check_split(self, split: Split, classes: list[str]) -> None:
        check_masks(split, len(classes), self.hparams.ignore_index, self.load_image)

    def pair_dataset(self, split: Split, transform: Any) -> Dataset:
        return SegmentationDataset(split, transform, self.load_image)

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        return read_mask_splits(Path(self.hparams.root).expanduser(), self.hparams.classes, self.medical)


def read_mask_splits(
    root: Path, classes: list[str] | None = None, medical: MedicalReading | None = None
) -> tuple[list[str], dict[str, Split]]:
    """The class names (``classes``, or ``root/classes.txt``) and ``root``'s images and masks: ``root/images`` and
    ``root/masks``, or the same under each of train, val and test present."""
    check_folder(root, "`root`")
    classes = list(classes or read_classes(root / "classes.txt"))
    if (root / "images").is_dir():
        return classes, {"train": read_mask_folder(root, classes, medical)}
    present = [name for name in ("train", "val", "test") if (root / name).is_dir()]
    if "train" not in present:
        raise ConfigError(f"Expected {str(root)!r} to hold images/ and masks/, or train/ (with val/, test/).")
    return classes, {name: read_mask_folder(root / name, classes, medical) for name in present}
