"""Source and target domains for domain adaptation: `TwoDomains` (the splits and loaders of every domain-adaptation
datamodule, whatever its inputs), `DomainDataModule` (images) and the folder-based `DomainAdaptationDataModule`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from lightning.pytorch.utilities import CombinedLoader, rank_zero_info
from torch.utils.data import DataLoader, Dataset

from tlkit.data_request import DataRequest
from tlkit.datamodules._attached import model_request
from tlkit.datamodules._splits import limit_labels, stratified_split
from tlkit.datamodules.datasets import Split, UnlabelledDataset
from tlkit.datamodules.folders import InvalidPolicy, check_same_classes, scan_image_folder
from tlkit.datamodules.image_datamodule import ImageDataModule
from tlkit.datamodules.transforms import eval_transform, strong_transform, train_transform, weak_transform
from tlkit.errors import config_error

TargetLabels = Literal["none", "few", "all"]
EpochLength = int | Literal["max", "min"]
# Each training loader's shuffling seed is the datamodule's seed plus its offset, fixed per domain so that serving
# fewer domains (source-free) leaves the others' orders unchanged.
SEED_OFFSETS = {"source": 0, "target": 1, "target_labeled": 2}


class TwoDomains:
    """Datamodule mixin: a labelled source domain and a target domain with none, a few (``shots`` per class) or all
    labels, for images (`DomainDataModule`) or audio clips (`tlkit.datamodules.AudioDomainDataModule`).

    Training batches are dicts from Lightning's CombinedLoader, one DataLoader per domain (so DDP gives each its own
    DistributedSampler): ``source`` -> (inputs, labels); ``target`` -> inputs, or [weak, strong] views when the
    model's `DataRequest` asks for ``target_views: weak_strong`` (and ``(views, indices)`` when it asks for
    ``target_indices``); ``target_labeled`` -> (inputs, labels) unless ``target_labels`` is ``none``. Validation has
    two loaders, source val and target val; test and predict use the target test split. Target val and test are held
    out of the target training pool, and model selection never sees target test. A model that asks for
    ``source_free`` (SHOT) gets no source loader at all, in training or validation.

    Subclasses implement `load_domains`; the modality's datamodule implements `target_training_set` and
    `target_pool_set`.

    Args:
        target_labels: ``none`` (unsupervised), ``few`` (``shots`` per class, seeded; semi-supervised) or ``all``.
        shots: labelled target samples per class when ``target_labels`` is ``few``.
        target_train_size: keep this many samples of the target training pool (a seeded random draw, no labels
            read), to adapt to a small target as a user with a few hundred unlabelled images would; None keeps all.
            The target validation and test splits keep their size.
        iters_per_epoch: steps per epoch, or ``max``/``min``: the larger/smaller domain's number of batches.
        val_fraction: fraction of each domain's classes held out for validation (0: no validation).
        test_fraction: fraction of the target's classes held out for testing.
    """

    test_split = "target_test"

    def __init__(
        self,
        *,
        target_labels: TargetLabels = "none",
        shots: int = 3,
        target_train_size: int | None = None,
        iters_per_epoch: EpochLength = "max",
        val_fraction: float = 0.1,
        test_fraction: float = 0.3,
        **kwargs,
    ) -> None:
        if target_labels not in ("none", "few", "all"):
            raise config_error("target_labels", "'none', 'few' or 'all'", target_labels)
        if shots < 1:
            raise config_error("shots", "an integer >= 1", shots)
        if target_train_size is not None and target_train_size < 1:
            raise config_error("target_train_size", "an integer >= 1, or null for the whole pool", target_train_size)
        if not (iters_per_epoch in ("max", "min") or (isinstance(iters_per_epoch, int) and iters_per_epoch >= 1)):
            raise config_error("iters_per_epoch", "an integer >= 1, 'max' or 'min'", iters_per_epoch)
        super().__init__(val_fraction=val_fraction, test_fraction=test_fraction, **kwargs)
        self.steps_per_epoch: int | None = None

    def target_training_set(self, request: DataRequest) -> Dataset:
        """The target training pool without labels, in the views ``request`` asks for (with indices if asked)."""
        raise NotImplementedError

    def target_pool_set(self) -> Dataset:
        """The target training pool in order, read for evaluation, inputs only (no labels, no index)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------- for subclasses
    def load_domains(self) -> tuple[list[str], Split, Split]:
        """Return (class names, source samples, target samples); both domains use the same class indices."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------------- domains
    @property
    def target_labels(self) -> TargetLabels:
        """How many target labels training may use: ``none``, ``few`` or ``all``."""
        return self.hparams.target_labels

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        classes, source, target = self.load_domains()
        return classes, {"source": source, "target": target}

    def make_splits(self, loaded: dict[str, Split]) -> dict[str, Split]:
        hp = self.hparams
        source, target = loaded["source"], loaded["target"]
        rest, held = stratified_split(source.labels, hp.val_fraction, hp.seed)
        splits = {"source_train": source.subset(rest), "source_val": source.subset(held)}
        rest, test = stratified_split(target.labels, hp.test_fraction, hp.seed + 1)
        pool = target.subset(rest)
        rest, val = stratified_split(pool.labels, hp.val_fraction / (1 - hp.test_fraction), hp.seed + 2)
        target_train = pool.subset(rest)
        if hp.target_train_size is not None:
            if hp.target_train_size > len(target_train.samples):
                raise config_error(
                    "target_train_size",
                    f"at most the target training pool's {len(target_train.samples)} images",
                    hp.target_train_size,
                )
            drawn = np.random.default_rng(hp.seed + 4).permutation(len(target_train.samples))[: hp.target_train_size]
            target_train = target_train.subset(sorted(int(i) for i in drawn))
        splits.update(target_train=target_train, target_val=pool.subset(val), target_test=target.subset(test))
        if hp.target_labels == "few":
            keep = limit_labels(splits["target_train"].labels, self.classes, hp.seed + 3, labels_per_class=hp.shots)
            splits["target_labeled"] = splits["target_train"].subset(keep)
        elif hp.target_labels == "all":
            splits["target_labeled"] = splits["target_train"]
        return splits

    # --------------------------------------------------------------------------------------------- loaders
    def train_dataloader(self) -> CombinedLoader:
        hp, request = self.hparams, model_request(self)
        datasets = {} if request.source_free else {"source": self.dataset("source_train", train=True)}
        datasets["target"] = self.target_training_set(request)
        if "target_labeled" in self.splits:
            datasets["target_labeled"] = self.dataset("target_labeled", train=True)
        # Epoch length: explicit steps (every domain cycles through fresh permutations), or the larger/smaller domain.
        batches = {name: max(1, len(d) // hp.batch_size) for name, d in datasets.items() if name != "target_labeled"}
        if isinstance(hp.iters_per_epoch, int):
            steps = hp.iters_per_epoch
        else:
            steps = max(batches.values()) if hp.iters_per_epoch == "max" else min(batches.values())
        loaders = {
            name: self.training_loader(name, d, steps * hp.batch_size, seed_offset=SEED_OFFSETS[name], drop_last=True)
            for name, d in datasets.items()
        }
        self.steps_per_epoch = steps
        rank_zero_info(
            f"{type(self).__name__}: {steps} steps per epoch (iters_per_epoch: {hp.iters_per_epoch}); "
            + ", ".join(f"{name} {len(d)} examples" for name, d in datasets.items())
        )
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> list[DataLoader]:
        return list(self.domain_val_dataloaders().values())

    def domain_val_dataloaders(self) -> dict[str, DataLoader]:
        """The validation loaders by domain: ``source`` (dataloader_idx 0), then ``target`` (1); only ``target``
        when the model asks for ``source_free``."""
        target = {"target": self.evaluation_loader("target_val")}
        return target if model_request(self).source_free else {"source": self.evaluation_loader("source_val"), **target}

    def target_pool_loader(self) -> DataLoader:
        """The target training pool in order, read for evaluation, inputs only (no labels): what a strategy labels
        itself (SHOT); a sample's position here is the index ``target_indices`` serves with it."""
        return DataLoader(self.target_pool_set(), **self._loader_options())


class DomainDataModule(TwoDomains, ImageDataModule):
    """`TwoDomains` of images: target views are the training transform, or weak and strong augmentations
    (``target_views: weak_strong``); subclasses implement `load_domains`.

    The arguments are `TwoDomains`' and `ImageDataModule`'s (``batch_size`` is per domain).
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True

    def _target_views(self, request: DataRequest) -> list[Callable]:
        config, hp = self.resolve_data_config(request), self.hparams
        if request.target_views == "weak_strong":
            return [weak_transform(config, hp.hflip), strong_transform(config, hp.hflip)]
        return [train_transform(config, hp.augment, hp.hflip, hp.min_crop_scale)]

    def target_training_set(self, request: DataRequest) -> Dataset:
        views = self._target_views(request)
        return UnlabelledDataset(self.splits["target_train"], self.load_image, views, request.target_indices)

    def target_pool_set(self) -> Dataset:
        transform = eval_transform(self.resolve_data_config())
        return UnlabelledDataset(self.splits["target_train"], self.load_image, [transform])


def domain_folders(source_dir: str, target_dir: str, root: str | None) -> tuple[Path, Path]:
    """The source and target folders a folder-based domain datamodule reads: relative to ``root`` when given."""
    base = Path(root).expanduser() if root else Path()
    return base / source_dir, base / target_dir


class DomainAdaptationDataModule(DomainDataModule):
    """Source and target domains as ImageFolder trees; Office-31 / Office-Home work as ``root`` plus domain names.

    Args:
        source_dir: the source domain's folder (``<class>/<image>``), relative to ``root`` when given.
        target_dir: the target domain's folder, relative to ``root`` when given.
        root: a folder holding one sub-folder per domain, e.g. ``data/office31`` with ``amazon``, ``webcam``, ``dslr``.
        on_invalid: ``error`` on a non-image or unreadable file, or ``skip`` it with a warning.
        verify_images: decode every image once up front (catches truncated files before training).

    The other arguments are `DomainDataModule`'s.

    Examples:
        >>> dm = DomainAdaptationDataModule(root="data/office31", source_dir="amazon", target_dir="webcam")
    """

    def __init__(
        self,
        source_dir: str,
        target_dir: str,
        root: str | None = None,
        *,
        on_invalid: InvalidPolicy = "error",
        verify_images: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.source_dir, self.target_dir = domain_folders(source_dir, target_dir, root)
        self.on_invalid = self.predict_on_invalid = on_invalid
        self.verify_images = verify_images

    def describe_source(self) -> str:
        return f"{str(self.source_dir)!r} and {str(self.target_dir)!r}"

    def load_domains(self) -> tuple[list[str], Split, Split]:
        source_classes, source_paths, source_labels = scan_image_folder(
            self.source_dir, self.on_invalid, self.verify_images
        )
        target_classes, target_paths, target_labels = scan_image_folder(
            self.target_dir, self.on_invalid, self.verify_images
        )
        check_same_classes(source_classes, target_classes, self.source_dir, self.target_dir)
        return source_classes, Split(source_paths, source_labels), Split(target_paths, target_labels)
