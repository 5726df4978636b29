"""`DigitsMDataModule`: a bundled domain shift, digits -> digits blended onto photo patches (MNIST-M recipe)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tlkit.datamodules.datasets import Split
from tlkit.datamodules.digits import DigitImages, digit_images
from tlkit.datamodules.domain_adaptation import DomainDataModule

# Colour photographs bundled inside scikit-image (no download).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def bundled_photos() -> list[np.ndarray]:
    """scikit-image's bundled colour photographs (``PHOTOS``) as (H, W, 3) uint8 arrays."""
    from skimage import data

    return [np.asarray(getattr(data, name)(), dtype=np.uint8) for name in PHOTOS]


def blend_onto_photos(images: list[Image.Image], size: int, seed: int) -> list[Image.Image]:
    """|patch - digit| per channel, with a random colour patch of a bundled photo per digit (Ganin & Lempitsky 2015).

    Deterministic for a given seed: the photo, the crop position and its size are drawn from ``seed``.
    """
    photos = bundled_photos()
    rng = np.random.default_rng(seed)
    blended = []
    for image in images:
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        crop = int(rng.integers(size, max(size + 1, min(h, w) // 3)))
        top, left = int(rng.integers(0, h - crop)), int(rng.integers(0, w - crop))
        patch = Image.fromarray(photo[top : top + crop, left : left + crop]).resize((size, size), Image.BILINEAR)
        digit = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.int16)
        blended.append(Image.fromarray(np.abs(np.asarray(patch, dtype=np.int16) - digit).astype(np.uint8)))
    return blended


class DigitsMDataModule(DigitImages, DomainDataModule):
    """Source: scikit-learn's 1,797 handwritten digits. Target: the same digits blended onto colour photo patches.

    The demo and test shift for domain adaptation: it needs no download and is deterministic by ``seed``. The target
    is rendered at ``image_size``.

    Takes `DigitImages`' arguments (``image_size`` 64, no flips, no crop) and `DomainDataModule`'s.

    Examples:
        >>> dm = DigitsMDataModule(image_size=64, iters_per_epoch=50)
    """

    def load_domains(self) -> tuple[list[str], Split, Split]:
        images, labels = digit_images()
        target = blend_onto_photos(images, self.hparams.image_size, self.hparams.seed)
        return [str(d) for d in range(10)], Split(images, labels), Split(target, labels)
