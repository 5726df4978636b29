"""DataModules: labelled image folders, image and text tables (classes, label sets or numbers), Hugging Face
datasets, LitData shards, images with segmentation masks, audio clips, bundled data and domain pairs, validated before
training."""

from tlkit.datamodules.audio import AudioDataModule, AudioFolderDataModule, VoicesDataModule
from tlkit.datamodules.audio_domains import AudioDomainDataModule, AudioDomainFolderDataModule, VoicesDomainDataModule
from tlkit.datamodules.audio_table import AudioTableDataModule
from tlkit.datamodules.classification import ClassificationDataModule
from tlkit.datamodules.coco import CocoDataModule
from tlkit.datamodules.datasets import ImageDataset, Split, UnlabelledDataset, open_rgb, to_rgb
from tlkit.datamodules.dense import DenseDataModule
from tlkit.datamodules.digit_scenes import DigitScenesDataModule
from tlkit.datamodules.digits import DigitsDataModule
from tlkit.datamodules.digits_m import DigitsMDataModule
from tlkit.datamodules.domain_adaptation import DomainAdaptationDataModule, DomainDataModule
from tlkit.datamodules.huggingface import HuggingFaceImageDataModule, HuggingFaceTextDataModule
from tlkit.datamodules.huggingface_audio import HuggingFaceAudioDataModule
from tlkit.datamodules.huggingface_dense import HuggingFaceDenseDataModule
from tlkit.datamodules.image_datamodule import ImageDataModule
from tlkit.datamodules.image_folder import ImageFolderDataModule
from tlkit.datamodules.image_table import ImageTableDataModule
from tlkit.datamodules.mnist_digits import MnistDigitsDataModule
from tlkit.datamodules.multi_digits import MultiDigitsDataModule
from tlkit.datamodules.rotten_tomatoes import RottenTomatoesDataModule
from tlkit.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader
from tlkit.datamodules.segmentation import MaskFolderDataModule
from tlkit.datamodules.shards import ShardsDataModule, write_shards
from tlkit.datamodules.text_datamodule import TextDataModule
from tlkit.datamodules.text_files import TextFileDataModule

__all__ = [
    "AudioDataModule",
    "AudioDomainDataModule",
    "AudioDomainFolderDataModule",
    "AudioFolderDataModule",
    "AudioTableDataModule",
    "ClassificationDataModule",
    "CocoDataModule",
    "DenseDataModule",
    "DigitScenesDataModule",
    "DigitsDataModule",
    "DigitsMDataModule",
    "DomainAdaptationDataModule",
    "DomainDataModule",
    "EpochShuffleSampler",
    "HuggingFaceAudioDataModule",
    "HuggingFaceDenseDataModule",
    "HuggingFaceImageDataModule",
    "HuggingFaceTextDataModule",
    "ImageDataModule",
    "ImageDataset",
    "ImageFolderDataModule",
    "ImageTableDataModule",
    "MaskFolderDataModule",
    "MnistDigitsDataModule",
    "MultiDigitsDataModule",
    "ResumableDataLoader",
    "RottenTomatoesDataModule",
    "ShardsDataModule",
    "Split",
    "TextDataModule",
    "TextFileDataModule",
    "UnlabelledDataset",
    "VoicesDataModule",
    "VoicesDomainDataModule",
    "open_rgb",
    "to_rgb",
    "write_shards",
]
