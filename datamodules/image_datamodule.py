"""`ImageDataModule`: the one base of tlkit's image datamodules."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tlkit.backbones import DataConfig
from tlkit.data_request import DataRequest
from tlkit.datamodules._attached import model_request, resolve_data_config
from tlkit.datamodules._labelled_data import LabelledData, check_split_arguments
from tlkit.datamodules._served_features import FeatureServingSlot
from tlkit.datamodules.datasets import ImageDataset, Split, open_rgb
from tlkit.datamodules.folders import InvalidPolicy, scan_images
from tlkit.datamodules.medical import MedicalReading
from tlkit.datamodules.sampling import ResumableTrainLoaders
from tlkit.datamodules.transforms import eval_transform, train_transform
from tlkit.errors import config_error, refuse_base_class
from tlkit.features import data_fingerprint


class ImageDataModule(FeatureServingSlot, LabelledData, ResumableTrainLoaders, LightningDataModule):
    """Image loading, transforms from the model's `DataRequest`, seeded splits, resumable loaders and prediction.

    Two kinds derive from it: `ClassificationDataModule` (one labelled dataset) and `DomainDataModule` (a source and
    a target domain); datamodules for a dataset derive from one of those. Transforms come from the attached model's
    request (its backbone's data config), optionally overridden by ``image_size`` and ``crop_pct``; while the model
    asks for cached features, every split with a deterministic transform serves them instead of images.

    Args:
        batch_size: images per batch (per domain for domain adaptation).
        num_workers: DataLoader worker processes (per loader).
        pin_memory: pin host memory for faster GPU transfer.
        persistent_workers: keep workers alive between epochs (needs ``num_workers > 0``).
        image_size: override the backbone's input size.
        crop_pct: override the backbone's centre-crop fraction for evaluation (1.0 = no crop).
        augment: use the small-data augmentation preset (random resized crop, flip, TrivialAugment) for training.
        min_crop_scale: the smallest fraction of the image's area a training crop keeps, in (0, 1]; raise it where a
            crop could cut away what the targets name (several labelled objects in one image).
        hflip: include the horizontal flip in the preset.
        val_fraction: fraction of each class held out for validation (0: no validation).
        test_fraction: fraction of each class held out for testing.
        seed: seed for every split and subset.
        predict_dir: a folder of images to label with ``tlkit predict`` (any layout); default: the test split.
        window: [centre, width] of the window DICOM files and NIfTI volumes are read through, in the modality's units
            after rescaling (CT: Hounsfield units; [40, 400] soft tissue, [-600, 1500] lung); default: each file's
            own window (DICOM) or display range (NIfTI), else its full range.
        dicom_frame: which frame of multi-frame DICOM files to read; default: such files are refused.
        slice_axis: the axis NIfTI volumes are cut along into 2-D images, in canonical (RAS) orientation: 2 axial,
            1 coronal, 0 sagittal; every slice is a sample.
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True
    classes_hint = "a classifier needs one folder per class"
    #: The split `test_dataloader` serves, and `predict_dataloader` without a ``predict_dir``.
    test_split = "test"

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        image_size: int | None = None,
        crop_pct: float | None = None,
        augment: bool = True,
        min_crop_scale: float = 0.35,
        hflip: bool = True,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        predict_dir: str | None = None,
        window: list[float] | None = None,
        dicom_frame: int | None = None,
        slice_axis: int = 2,
    ) -> None:
        super().__init__()
        refuse_base_class(self, "data", "tlkit.datamodules")
        check_split_arguments(batch_size, val_fraction, test_fraction)
        if persistent_workers and num_workers == 0:
            raise config_error("persistent_workers", "false when num_workers is 0", persistent_workers)
        if image_size is not None and image_size < 1:
            raise config_error("image_size", "a positive number of pixels, or null for the backbone's own", image_size)
        if crop_pct is not None and not 0.0 < crop_pct <= 1.0:
            raise config_error("crop_pct", "in (0, 1]", crop_pct)
        if not 0.0 < min_crop_scale <= 1.0:
            raise config_error("min_crop_scale", "in (0, 1]", min_crop_scale)
        #: How DICOM files and NIfTI volumes among the images are read.
        self.medical = MedicalReading.from_arguments(window, dicom_frame, slice_axis)
        # Collects the arguments of every __init__ in the subclass chain (Lightning walks the frames).
        self.save_hyperparameters()
        self.classes: list[str] = []
        self.splits: dict[str, Split] = {}
        #: Overrides the model's input config when set (research code).
        self.data_config: DataConfig | None = None
        self._loaded: tuple[list[str], dict[str, Split]] | None = None
        self._predict: Split | None = None  # the predict_dir's images, once scanned

    # ----------------------------------------------------------------------------------------- for subclasses
    def load_image(self, sample: Any) -> Image.Image:
        """Turn one stored sample into an RGB PIL image (default: open a file path)."""
        return open_rgb(sample, self.medical)

    # -------------------------------------------------------------------------------------------- datasets
    #: The attached model's data config, resolved on first use after each setup.
    _resolved_data_config: DataConfig | None = None

    def setup(self, stage: str | None = None) -> None:
        self._resolved_data_config = None  # resolved again, once, for the model of this run
        super().setup(stage)

    def resolve_data_config(self, request: DataRequest | None = None) -> DataConfig:
        """The backbone's data config (from ``request``, by default the attached model's; ImageNet defaults without
        one), with this module's overrides. The attached model's is resolved once per setup and recorded in every
        checkpoint (`state_dict`)."""
        if request is not None:
            return resolve_data_config(self, request)
        if self._resolved_data_config is None:
            self._resolved_data_config = resolve_data_config(self)
        return self._resolved_data_config

    def dataset(self, split: str, train: bool | None = None, request: DataRequest | None = None) -> Dataset:
        """The named split as a Dataset; ``train`` picks the training or evaluation transform (default: by name).

        Served as the backbone's cached features instead while the request (by default the attached model's) asks
        for them and the transform allows.
        """
        request = request if request is not None else model_request(self)
        transform, use_train = self.split_transform(split, train, request)
        dataset = ImageDataset(self.splits[split], self.load_image, transform)
        return self._maybe_features(dataset, split, transform, use_train and self.hparams.augment, request)

    def split_transform(
        self, split: str, train: bool | None = None, request: DataRequest | None = None
    ) -> tuple[Callable, bool]:
        """(the named split's transform, whether it is the training one): the training preset for ``train`` (by
        default for the ``train`` split), else the evaluation transform, from the backbone's data config."""
        config = self.resolve_data_config(request)
        use_train = split == "train" if train is None else train
        if not use_train:
            return eval_transform(config), False
        hp = self.hparams
        return train_transform(config, hp.augment, hp.hflip, hp.min_crop_scale), True

    def _maybe_features(
        self, dataset: ImageDataset, split: str, transform: Any, random: bool, request: DataRequest
    ) -> Dataset:
        serving = self.feature_serving
        if serving is None or not serving.active:
            return dataset
        if random:
            rank_zero_info(
                f"FeatureCache: the {split} transform is random (augment: true), so {split} features are not cached "
                "and the backbone runs every step; set augment: false to cache them."
            )
            return dataset
        data = self.splits[split]
        return serving.dataset(dataset, data_fingerprint(data.samples, data.labels), repr(transform), name=split)

    # --------------------------------------------------------------------------------------------- loaders
    def _loader_options(self) -> dict[str, Any]:
        hp = self.hparams
        return dict(
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers,
        )

    def evaluation_loader(self, split: str) -> DataLoader:
        """The named split in order, with the evaluation transform."""
        return DataLoader(self.dataset(split, train=False), **self._loader_options())

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_loader(self.test_split)

    # ------------------------------------------------------------------------------------------ prediction
    #: What a file of ``predict_dir`` that is no readable image does: skipped and named, by default; folder
    #: datamodules follow their ``on_invalid``.
    predict_on_invalid: InvalidPolicy = "skip"

    def _predict_split(self) -> Split:
        if self.hparams.predict_dir is None:
            return self.splits[self.test_split]
        # Scanned (and every image verified) once: the writer's sample names and the loader share it.
        if self._predict is None:
            paths = scan_images(
                Path(self.hparams.predict_dir).expanduser(), self.predict_on_invalid, medical=self.medical
            )
            self._predict = Split(paths, [-1] * len(paths))  # -1: no label
        return self._predict

    def predict_load(self) -> Callable[[Any], Image.Image]:
        """How a predicted sample is opened: as this datamodule stores its samples, or a ``predict_dir``'s file."""
        # Files in a predict folder are opened as files, whatever this datamodule stores its own samples as.
        return self.load_image if self.hparams.predict_dir is None else partial(open_rgb, medical=self.medical)

    def predict_sample_names(self) -> list[str]:
        """What each predicted sample is called in the written predictions: its file path, or ``<split>/<index>``."""
        samples = self._predict_split().samples
        return [str(s) if isinstance(s, (str, Path)) else f"{self.test_split}/{i}" for i, s in enumerate(samples)]

    def predict_dataloader(self) -> DataLoader:
        split = self._predict_split()
        # Files in a predict folder are opened as files, whatever this datamodule stores its own samples as.
        dataset = ImageDataset(split, self.predict_load(), eval_transform(self.resolve_data_config()))
        hp = self.hparams
        return DataLoader(dataset, batch_size=hp.batch_size, num_workers=hp.num_workers, pin_memory=hp.pin_memory)
