"""DataModules: labelled image folders, bundled data and domain pairs, validated before training."""

from tlkit.datamodules.classification import ClassificationDataModule
from tlkit.datamodules.datasets import ImageDataset, Split, UnlabelledDataset, open_rgb
from tlkit.datamodules.digits import DigitsDataModule
from tlkit.datamodules.digits_m import DigitsMDataModule
from tlkit.datamodules.domain_adaptation import DomainAdaptationDataModule, DomainDataModule
from tlkit.datamodules.image_datamodule import ImageDataModule
from tlkit.datamodules.image_folder import ImageFolderDataModule
from tlkit.datamodules.mnist_digits import MnistDigitsDataModule
from tlkit.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader

__all__ = [
    "ClassificationDataModule",
    "DigitsDataModule",
    "DigitsMDataModule",
    "DomainAdaptationDataModule",
    "DomainDataModule",
    "EpochShuffleSampler",
    "ImageDataModule",
    "ImageDataset",
    "ImageFolderDataModule",
    "MnistDigitsDataModule",
    "ResumableDataLoader",
    "Split",
    "UnlabelledDataset",
    "open_rgb",
]
