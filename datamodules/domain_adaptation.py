"""Source and target domains for domain adaptation: `DomainDataModule` and the folder-based
`DomainAdaptationDataModule`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader, rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tlkit.backbones import DataConfig
from tlkit.datamodules._attached import attached_model, resolve_data_config
from tlkit.datamodules._folders import InvalidPolicy, check_same_classes, scan_image_folder
from tlkit.datamodules._splits import limit_labels, stratified_split
from tlkit.datamodules.classification import ImageDataset, Split, open_rgb
from tlkit.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader, ResumableTrainLoaders
from tlkit.datamodules.transforms import eval_transform, strong_transform, train_transform, weak_transform
from tlkit.errors import config_error, refuse_base_class
from tlkit.randomness import sample_seed, seeded

TargetLabels = Literal["none", "few", "all"]
EpochLength = int | Literal["max", "min"]


class UnlabelledDataset(Dataset):
    """Target images without their labels (so no strategy can use them by accident), in one or two views."""

    def __init__(self, split: Split, load: Callable[[Any], Image.Image], transforms: list[Callable]) -> None:
        self.split, self.load, self.transforms = split, load, transforms

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int):
        image = self.load(self.split.samples[index])
        with seeded(sample_seed(index)):  # one seed for all views: the draws continue from view to view
            views = [t(image) for t in self.transforms]
        return views[0] if len(views) == 1 else views


class DomainDataModule(ResumableTrainLoaders, LightningDataModule):
    """A labelled source domain and a target domain with none, a few (``shots`` per class) or all labels.

    Training batches are dicts from Lightning's CombinedLoader, one DataLoader per domain (so DDP gives each its own
    DistributedSampler): ``source`` -> (images, labels); ``target`` -> images, or [weak, strong] views when the model
    sets ``target_views = "weak_strong"``; ``target_labeled`` -> (images, labels) unless ``target_labels`` is
    ``none``. Validation has two loaders, source val and target val; test and predict use the target test split.
    Target val and test are held out of the target training pool, and model selection never sees target test.

    Subclasses implement `load_domains`.

    Args:
        target_labels: ``none`` (unsupervised), ``few`` (``shots`` per class, seeded; semi-supervised) or ``all``.
        shots: labelled target images per class when ``target_labels`` is ``few``.
        iters_per_epoch: steps per epoch, or ``max``/``min``: the larger/smaller domain's number of batches.
        batch_size: images per domain per batch.
        val_fraction: fraction of each domain's classes held out for validation.
        test_fraction: fraction of the target's classes held out for testing.
        num_workers: DataLoader workers per domain.
        pin_memory: pin host memory.
        image_size: override the backbone's input size.
        crop_pct: override the evaluation centre-crop fraction.
        augment: use the small-data augmentation preset for training images.
        hflip: include horizontal flips in augmentation.
        seed: seed for every split and subset.
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True

    def __init__(
        self,
        target_labels: TargetLabels = "none",
        shots: int = 3,
        iters_per_epoch: EpochLength = "max",
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.3,
        num_workers: int = 0,
        pin_memory: bool = False,
        image_size: int | None = None,
        crop_pct: float | None = None,
        augment: bool = True,
        hflip: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        refuse_base_class(self, "data", "tlkit.datamodules")
        if target_labels not in ("none", "few", "all"):
            raise config_error("target_labels", "'none', 'few' or 'all'", target_labels)
        if shots < 1:
            raise config_error("shots", "an integer >= 1", shots)
        if not (iters_per_epoch in ("max", "min") or (isinstance(iters_per_epoch, int) and iters_per_epoch >= 1)):
            raise config_error("iters_per_epoch", "an integer >= 1, 'max' or 'min'", iters_per_epoch)
        if batch_size < 1:
            raise config_error("batch_size", "an integer >= 1", batch_size)
        if val_fraction <= 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
            raise config_error(
                "val_fraction and test_fraction", "positive with a sum below 1", (val_fraction, test_fraction)
            )
        self.save_hyperparameters()
        self.classes: list[str] = []
        self.splits: dict[str, Split] = {}
        self.data_config: DataConfig | None = None
        self.steps_per_epoch: int | None = None

    # ----------------------------------------------------------------------------------------- for subclasses
    def load_domains(self) -> tuple[list[str], Split, Split]:
        """Return (class names, source samples, target samples); both domains use the same class indices."""
        raise NotImplementedError

    def load_image(self, sample: Any) -> Image.Image:
        return open_rgb(sample)

    # --------------------------------------------------------------------------------------------- common
    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.classes)

    def class_names(self) -> list[str]:
        """Class names in label order, shared by both domains (loads and checks the data on first use)."""
        self.setup()
        return list(self.classes)

    def resolve_data_config(self) -> DataConfig:
        """The attached backbone's data config (ImageNet defaults without one), with this module's overrides."""
        return resolve_data_config(self)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        self.classes, source, target = self.load_domains()
        rest, held = stratified_split(source.labels, hp.val_fraction, hp.seed)
        splits = {"source_train": source.subset(rest), "source_val": source.subset(held)}
        rest, test = stratified_split(target.labels, hp.test_fraction, hp.seed + 1)
        pool = target.subset(rest)
        rest, val = stratified_split(pool.labels, hp.val_fraction / (1 - hp.test_fraction), hp.seed + 2)
        splits.update(target_train=pool.subset(rest), target_val=pool.subset(val), target_test=target.subset(test))
        if hp.target_labels == "few":
            keep = limit_labels(splits["target_train"].labels, self.classes, hp.seed + 3, labels_per_class=hp.shots)
            splits["target_labeled"] = splits["target_train"].subset(keep)
        elif hp.target_labels == "all":
            splits["target_labeled"] = splits["target_train"]
        self.splits = splits

    def _target_views(self) -> list[Callable]:
        config, hp = self.resolve_data_config(), self.hparams
        model = attached_model(self)
        if getattr(model, "target_views", "single") == "weak_strong":
            return [weak_transform(config, hp.hflip), strong_transform(config, hp.hflip)]
        return [train_transform(config, hp.augment, hp.hflip)]

    def _train_loader(self, dataset: Dataset, num_samples: int | None, seed_offset: int) -> ResumableDataLoader:
        hp = self.hparams
        sampler = EpochShuffleSampler(len(dataset), hp.seed + seed_offset, num_samples)
        return ResumableDataLoader(
            dataset,
            batch_size=hp.batch_size,
            sampler=sampler,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            drop_last=True,
        )

    def train_dataloader(self) -> CombinedLoader:
        hp = self.hparams
        config = self.resolve_data_config()
        train = train_transform(config, hp.augment, hp.hflip)
        datasets = {
            "source": ImageDataset(self.splits["source_train"], self.load_image, train),
            "target": UnlabelledDataset(self.splits["target_train"], self.load_image, self._target_views()),
        }
        if "target_labeled" in self.splits:
            datasets["target_labeled"] = ImageDataset(self.splits["target_labeled"], self.load_image, train)
        # Epoch length: explicit steps (every domain cycles through fresh permutations), or the larger/smaller domain.
        batches = {name: max(1, len(d) // hp.batch_size) for name, d in datasets.items() if name != "target_labeled"}
        if isinstance(hp.iters_per_epoch, int):
            steps = hp.iters_per_epoch
        else:
            steps = max(batches.values()) if hp.iters_per_epoch == "max" else min(batches.values())
        loaders = {
            name: self.track_train_loader(name, self._train_loader(d, steps * hp.batch_size, offset))
            for offset, (name, d) in enumerate(datasets.items())
        }
        self.steps_per_epoch = steps
        rank_zero_info(
            f"DomainDataModule: {steps} steps per epoch (iters_per_epoch: {hp.iters_per_epoch}); "
            + ", ".join(f"{name} {len(d)} images" for name, d in datasets.items())
        )
        return CombinedLoader(loaders, mode="min_size")

    def _eval_loader(self, split: str) -> DataLoader:
        hp = self.hparams
        dataset = ImageDataset(self.splits[split], self.load_image, eval_transform(self.resolve_data_config()))
        return DataLoader(dataset, batch_size=hp.batch_size, num_workers=hp.num_workers, pin_memory=hp.pin_memory)

    def val_dataloader(self) -> list[DataLoader]:
        return list(self.domain_val_dataloaders().values())

    def domain_val_dataloaders(self) -> dict[str, DataLoader]:
        """The validation loaders by domain: ``source`` (dataloader_idx 0), then ``target`` (1)."""
        return {"source": self._eval_loader("source_val"), "target": self._eval_loader("target_val")}

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("target_test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("target_test")


class DomainAdaptationDataModule(DomainDataModule):
    """Source and target domains as ImageFolder trees; Office-31 / Office-Home work as ``root`` plus domain names.

    Args:
        source_dir: the source domain's folder (``<class>/<image>``), relative to ``root`` when given.
        target_dir: the target domain's folder, relative to ``root`` when given.
        root: a folder holding one sub-folder per domain, e.g. ``data/office31`` with ``amazon``, ``webcam``, ``dslr``.
        on_invalid: ``error`` on a non-image or unreadable file, or ``skip`` it with a warning.

    The other arguments are `DomainDataModule`'s.

    Example:
        >>> dm = DomainAdaptationDataModule(root="data/office31", source_dir="amazon", target_dir="webcam")
    """

    def __init__(
        self,
        source_dir: str,
        target_dir: str,
        root: str | None = None,
        *,
        on_invalid: InvalidPolicy = "error",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        base = Path(root).expanduser() if root else Path()
        self.source_dir, self.target_dir = base / source_dir, base / target_dir
        self.on_invalid = on_invalid

    def load_domains(self) -> tuple[list[str], Split, Split]:
        source_classes, source_paths, source_labels = scan_image_folder(self.source_dir, self.on_invalid)
        target_classes, target_paths, target_labels = scan_image_folder(self.target_dir, self.on_invalid)
        check_same_classes(source_classes, target_classes, self.source_dir, self.target_dir)
        return source_classes, Split(source_paths, source_labels), Split(target_paths, target_labels)
