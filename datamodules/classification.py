"""`ClassificationDataModule`: one labelled image dataset, split into train/val/test, with limited-label options."""

from __future__ import annotations

from torch.utils.data import DataLoader

from tlkit.datamodules._labelled_data import check_label_limits
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.image_datamodule import ImageDataModule


class ClassificationDataModule(ImageDataModule):
    """Base for labelled image datamodules: subclasses implement `load_splits`; this class does the rest.

    Args:
        labels_per_class: keep only this many labelled training images per class (limited-label experiments).
        train_fraction: keep only this fraction of each class's training images.

    The other arguments are `ImageDataModule`'s; ``val_fraction`` and ``test_fraction`` apply when the data has no
    validation or test split of its own.
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True

    def __init__(self, *, labels_per_class: int | None = None, train_fraction: float | None = None, **kwargs) -> None:
        check_label_limits(labels_per_class, train_fraction)
        super().__init__(**kwargs)

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        """Return (class names, splits); ``train`` is required, ``val``/``test`` are split off ``train`` if missing."""
        raise NotImplementedError

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        return self.load_splits()

    def train_dataloader(self) -> DataLoader:
        return self.training_loader("train", self.dataset("train"))

    def val_dataloader(self) -> DataLoader:
        return self.evaluation_loader("val")
