"""DataModules: labelled image folders and bundled data, validated before training."""

from tlkit.datamodules.classification import ClassificationDataModule, EpochShuffleSampler, ImageDataset, Split
from tlkit.datamodules.digits import DigitsDataModule
from tlkit.datamodules.image_folder import ImageFolderDataModule

__all__ = [
    "ClassificationDataModule",
    "DigitsDataModule",
    "EpochShuffleSampler",
    "ImageDataset",
    "ImageFolderDataModule",
    "Split",
]
