"""Samples and the Datasets over them: `Split`, `ImageDataset`, `UnlabelledDataset`, `open_rgb` and `to_rgb`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from tlkit.datamodules.medical import MedicalReading
from tlkit.errors import ConfigError
from tlkit.randomness import sample_seed, seeded


def open_rgb(path: Any, medical: MedicalReading | None = None) -> Image.Image:
    """Open an image file as 8-bit RGB (`to_rgb`); a DICOM file or a NIfTI volume's slice as ``medical`` reads it
    (default: with the file's own window or range)."""
    medical = medical or MedicalReading()
    if medical.reads(path):
        return medical.open(path)
    with Image.open(path) as image:
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """An image of any mode as 8-bit RGB, scaling 16- and 32-bit greyscale to the full 8-bit range.

    PIL's ``convert("RGB")`` clips 16-bit values above 255 instead of scaling them, so a 16-bit PNG would become
    nearly all white (only 2 grey levels survive in a typical scan). Palette, RGBA (alpha dropped), CMYK and LA go
    through ``convert``. `tlkit.engines.export` writes the same recipe into ``model.json`` for code without tlkit.
    """
    if image.mode.startswith("I"):  # "I;16", "I;16B", "I" (32-bit): scale by the type's range
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() <= 65535 else float(pixels.max())
        image = Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8), mode="L")
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        image = Image.fromarray(((pixels - low) / max(high - low, 1e-12) * 255).round().astype(np.uint8), mode="L")
    if image.mode == "RGB":  # most photos: decoded as they are (``convert`` would copy every pixel again)
        image.load()
        return image
    return image.convert("RGB")


@dataclass
class Split:
    """Samples (file paths or in-memory images) and their integer labels."""

    samples: list[Any]
    labels: list[int]

    def subset(self, indices: Sequence[int]) -> Split:
        return Split([self.samples[i] for i in indices], [self.labels[i] for i in indices])


class ImageDataset(Dataset):
    """Samples opened with ``load`` (a path or an in-memory image to an RGB PIL image), then ``transform``ed."""

    def __init__(self, split: Split, load: Callable[[Any], Image.Image], transform: Callable | None) -> None:
        self.split, self.load, self.transform = split, load, transform

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int):
        image = load_checked(self.load, self.split.samples[index])
        if self.transform is not None:
            with seeded(sample_seed(index)):  # a training index carries its augmentation seed
                image = self.transform(image)
        return image, self.split.labels[index]


def load_checked(load: Callable[[Any], Image.Image], sample: Any) -> Image.Image:
    """``load(sample)``; a file that no longer decodes (setup checked it; it changed since) is one line naming it."""
    try:
        return load(sample)
    except (OSError, SyntaxError, ValueError) as err:  # what PIL raises for truncated or damaged data
        raise ConfigError(
            f"Expected every image to decode as it did when setup checked it, but {str(sample)!r} does not now "
            f"({err}): replace or remove it, then continue with --ckpt_path last."
        ) from None


class UnlabelledDataset(Dataset):
    """Target images without their labels (so no strategy can use them by accident), in one or two views; with
    ``with_index``, each sample is ``(views, index)``: its position in ``split``."""

    def __init__(
        self, split: Split, load: Callable[[Any], Image.Image], transforms: list[Callable], with_index: bool = False
    ) -> None:
        self.split, self.load, self.transforms, self.with_index = split, load, transforms, with_index

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int):
        image = load_checked(self.load, self.split.samples[index])
        with seeded(sample_seed(index)):  # one seed for all views: the draws continue from view to view
            views = [t(image) for t in self.transforms]
        sample = views[0] if len(views) == 1 else views
        return (sample, index) if self.with_index else sample
