"""`ImageFolderDataModule`: your own images, in torchvision's ImageFolder layout."""

from __future__ import annotations

from pathlib import Path

from tlkit.datamodules.classification import ClassificationDataModule
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.folders import InvalidPolicy, check_same_classes, scan_image_folder

# Accepted names of the split folders inside ``data_dir``.
SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


class ImageFolderDataModule(ClassificationDataModule):
    """Images in ``data_dir/<class>/<image>``, or in ``data_dir/{train,val,test}/<class>/<image>``.

    With ``train/`` present, ``val/`` (or ``valid/``) and ``test/`` are used when they exist and are split off
    ``train/`` by ``val_fraction``/``test_fraction`` (stratified, seeded) when they do not. Without it, ``data_dir``
    itself is the one folder to split. Every file is checked before training: a missing folder, an empty class
    folder, a non-image or truncated file, or class folders that differ between splits is a one-line error naming
    the path (``on_invalid: skip`` skips bad files with a warning naming them instead).

    Args:
        data_dir: the image folder.
        on_invalid: ``error`` on a non-image or unreadable file, or ``skip`` it with a warning.
        verify_images: decode every image once up front (catches truncated files before training).

    The other arguments are `ClassificationDataModule`'s.

    Examples:
        >>> dm = ImageFolderDataModule("data/flowers", labels_per_class=10, batch_size=16)
    """

    def __init__(
        self,
        data_dir: str,
        *,
        on_invalid: InvalidPolicy = "error",
        verify_images: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir).expanduser()
        self.on_invalid = self.predict_on_invalid = on_invalid
        self.verify_images = verify_images

    def describe_source(self) -> str:
        return repr(str(self.data_dir))

    def split_dirs(self) -> dict[str, Path]:
        """The folder of each split that exists on disk."""
        if not (self.data_dir / "train").is_dir():
            return {"train": self.data_dir}
        found = {}
        for split, names in SPLIT_DIRS.items():
            for name in names:
                if (self.data_dir / name).is_dir():
                    found[split] = self.data_dir / name
                    break
        return found

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        dirs = self.split_dirs()
        classes: list[str] = []
        splits: dict[str, Split] = {}
        for split, folder in dirs.items():
            names, paths, labels = scan_image_folder(folder, self.on_invalid, self.verify_images, self.medical)
            if split == "train":
                classes = names
            else:
                check_same_classes(classes, names, dirs["train"], folder)
            splits[split] = Split(paths, labels)
        return classes, splits
