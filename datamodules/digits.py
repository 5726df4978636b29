"""`DigitsDataModule`: real handwritten digits bundled with scikit-learn, so tlkit runs with no download."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tlkit.datamodules.classification import ClassificationDataModule
from tlkit.datamodules.datasets import Split


def digit_images() -> tuple[list[Image.Image], list[int]]:
    """scikit-learn's 1,797 8x8 digits (0-16 intensity) as RGB PIL images, with their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    images = [Image.fromarray(p, mode="L").convert("RGB") for p in pixels]
    return images, [int(t) for t in digits.target]


class DigitImages:
    """Shared by the bundled digit datamodules: in-memory images, drawn at ``image_size``, that are not
    mirror-symmetric (no flips) and fill the frame (no evaluation centre-crop).

    Args:
        image_size: side of the square images fed to the backbone.
        crop_pct: evaluation centre-crop fraction (1.0: digits fill the frame, nothing is cropped).
        hflip: include horizontal flips in augmentation (off: digits are not mirror-symmetric).
    """

    def __init__(self, *, image_size: int = 64, crop_pct: float = 1.0, hflip: bool = False, **kwargs) -> None:
        super().__init__(image_size=image_size, crop_pct=crop_pct, hflip=hflip, **kwargs)

    def load_image(self, sample: Image.Image) -> Image.Image:
        return sample


class DigitsDataModule(DigitImages, ClassificationDataModule):
    """scikit-learn's bundled 1,797 handwritten digits (10 classes) as RGB images, upscaled to ``image_size``.

    The embedded default dataset: no download, same splits and limited-label options as every tlkit datamodule.

    Args:
        test_fraction: fraction of each class held out for testing.

    The other arguments are `DigitImages`' (``image_size`` 64, no flips, no crop) and `ClassificationDataModule`'s.

    Examples:
        >>> dm = DigitsDataModule(image_size=64, labels_per_class=10)
    """

    def __init__(self, *, test_fraction: float = 0.2, **kwargs) -> None:
        super().__init__(test_fraction=test_fraction, **kwargs)

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        images, labels = digit_images()
        return [str(d) for d in range(10)], {"train": Split(images, labels)}
