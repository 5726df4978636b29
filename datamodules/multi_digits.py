"""`MultiDigitsDataModule`: two to four real handwritten digits on one canvas, for multi-label classification (which
digits are present) and regression (their sum), bundled and offline."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from tlkit.datamodules.classification import ClassificationDataModule
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.digits import DigitImages
from tlkit.errors import config_error
from tlkit.protocols import TargetKind

#: Canvas layout: a 2 x 2 grid of cells, each a digit's 8 x 8 pixels with room to move.
CELL, DIGIT = 12, 8
MultiDigitsTarget = Literal["labels", "sum"]


def digit_pixels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits as uint8 greyscale (0-255), with their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8), digits.target.astype(np.int64)


def compose_canvases(
    pixels: np.ndarray, labels: np.ndarray, count: int, seed: int, min_digits: int = 2, max_digits: int = 4
) -> tuple[list[Image.Image], list[list[int]]]:
    """``count`` canvases of ``min_digits`` to ``max_digits`` digits drawn from ``pixels``, each in its own cell of
    a 2 x 2 grid at a random offset: RGB images and the digit drawn in each, in cell order. Deterministic in
    ``seed``."""
    rng = np.random.default_rng(seed)
    images, drawn = [], []
    for _ in range(count):
        canvas = np.zeros((2 * CELL, 2 * CELL), dtype=np.uint8)
        cells = rng.permutation(4)[: int(rng.integers(min_digits, max_digits + 1))]
        chosen = rng.choice(len(pixels), size=len(cells), replace=False)
        for cell, index in zip(sorted(cells), chosen):
            top = (cell // 2) * CELL + int(rng.integers(0, CELL - DIGIT + 1))
            left = (cell % 2) * CELL + int(rng.integers(0, CELL - DIGIT + 1))
            canvas[top : top + DIGIT, left : left + DIGIT] = np.maximum(
                canvas[top : top + DIGIT, left : left + DIGIT], pixels[index]
            )
        images.append(Image.fromarray(canvas, mode="L").convert("RGB"))
        drawn.append([int(labels[i]) for i in chosen])
    return images, drawn


class MultiDigitsDataModule(DigitImages, ClassificationDataModule):
    """Canvases of two to four of scikit-learn's real handwritten digits, no two from the same source image
    across splits: the digits are divided into training, validation and test pools first (``val_fraction``,
    ``test_fraction``, seeded), and each split's canvases are composed from its own pool.

    Targets (``targets``):

    - ``labels``: which of the ten digits appear (multi-label; for ``task: MultiLabel``), names ``0`` to ``9``.
    - ``sum``: the sum of the digits drawn (regression; for ``task: Regression``), name ``digit_sum``.

    Args:
        targets: ``labels`` or ``sum``.
        num_images: canvases in all, shared among the splits in the pools' proportions.
        min_crop_scale: the training crop keeps at least this much of the canvas (a smaller crop would cut digits
            off while their labels stay).

    The other arguments are `DigitImages`' (``image_size`` 64, no flips, no crop) and `ClassificationDataModule`'s
    (``labels_per_class`` counts canvases per digit label).

    Examples:
        >>> dm = MultiDigitsDataModule(targets="labels", num_images=2000)
    """

    def __init__(
        self,
        *,
        targets: MultiDigitsTarget = "labels",
        num_images: int = 2000,
        min_crop_scale: float = 0.8,
        test_fraction: float = 0.2,
        **kwargs,
    ) -> None:
        if targets not in ("labels", "sum"):
            raise config_error("targets", "'labels' (which digits appear) or 'sum' (their sum)", targets)
        if num_images < 10:
            raise config_error("num_images", "an integer >= 10", num_images)
        super().__init__(min_crop_scale=min_crop_scale, test_fraction=test_fraction, **kwargs)

    @property
    def target_kind(self) -> TargetKind:
        return "labels" if self.hparams.targets == "labels" else "values"

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        hp = self.hparams
        pixels, labels = digit_pixels()
        order = np.random.default_rng(hp.seed).permutation(len(pixels))
        n_test, n_val = round(hp.test_fraction * len(order)), round(hp.val_fraction * len(order))
        pools = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        names = [str(d) for d in range(10)] if hp.targets == "labels" else ["digit_sum"]
        splits = {}
        for offset, (name, pool) in enumerate(pools.items()):
            if len(pool) == 0:
                continue
            count = max(1, round(hp.num_images * len(pool) / len(order)))
            images, drawn = compose_canvases(pixels[pool], labels[pool], count, hp.seed * 1000 + 17 + offset)
            splits[name] = Split(images, [self._target(d) for d in drawn])
        return names, splits

    def _target(self, drawn: list[int]) -> np.ndarray:
        if self.hparams.targets == "sum":
            return np.asarray([sum(drawn)], dtype=np.float32)
        present = np.zeros(10, dtype=np.float32)
        present[drawn] = 1.0
        return present
