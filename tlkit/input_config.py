"""What a backbone expects of its input: `DataConfig` for images, `TextConfig` for text, `AudioConfig` for audio.

The datamodules build their transforms (or tokenization) from it; it reaches them inside a `tlkit.DataRequest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """What a backbone expects of its input images; the datamodules derive their transforms from it."""

    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875


@dataclass(frozen=True)
class TextConfig:
    """What a text backbone expects of its input: texts tokenized by ``tokenizer``, at most ``max_length`` tokens.

    Args:
        tokenizer: called as ``tokenizer(texts, truncation=True, max_length=..., padding=True, return_tensors="pt")``
            (a Hugging Face tokenizer's interface); a text datamodule tokenizes its batches with it.
        max_length: the longest token sequence the backbone accepts.
    """

    tokenizer: Any
    max_length: int = 128


@dataclass(frozen=True)
class AudioConfig:
    """What an audio backbone expects of its input: mono waveforms at ``sample_rate`` Hz (floats in [-1, 1]), a
    batch padded to its longest clip with each clip's length given.

    Args:
        sample_rate: the rate every clip is resampled to.
        max_seconds: the training crop: longer clips are cropped at random while training (evaluation reads them
            whole); the length the backbone was trained on.
    """

    sample_rate: int = 16000
    max_seconds: float = 1.6


#: Any kind of input a backbone can declare.
InputConfig = DataConfig | TextConfig | AudioConfig
