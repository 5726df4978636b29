"""Image batches as people look at them: found in a batch, un-normalised, framed in a colour."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from tlkit.protocols import ResolvesDataConfig


def images_of(batch: Any) -> torch.Tensor | None:
    """The image tensor (N, 1 or 3, H, W) a training or validation batch starts with, or None (text, features)."""
    if isinstance(batch, dict):  # domain adaptation: {"source": (images, labels), ...}
        batch = batch.get("source", next(iter(batch.values()), None))
    if isinstance(batch, (list, tuple)):
        batch = batch[0] if batch else None
    if torch.is_tensor(batch) and batch.ndim == 4 and batch.shape[1] in (1, 3) and batch.is_floating_point():
        return batch
    return None


def unnormalised(images: torch.Tensor, trainer: pl.Trainer) -> torch.Tensor:
    """Images back in [0, 1] with the datamodule's mean and std (or stretched to their own range without them)."""
    datamodule = trainer.datamodule
    if isinstance(datamodule, ResolvesDataConfig):
        config = datamodule.resolve_data_config()
        mean = torch.tensor(config.mean).view(1, -1, 1, 1)
        std = torch.tensor(config.std).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)
    low, high = images.amin(), images.amax()
    return (images - low) / (high - low).clamp_min(1e-12)


def framed(images: torch.Tensor, colour: tuple[float, float, float], size: int, border: int) -> torch.Tensor:
    """``images`` in [0, 1] as RGB thumbnails of ``size`` px, inside a ``border``-px frame of ``colour``."""
    inner = size - 2 * border
    thumbnails = F.interpolate(images.float(), size=(inner, inner), mode="bilinear", antialias=True)
    if thumbnails.shape[1] == 1:
        thumbnails = thumbnails.expand(-1, 3, -1, -1)
    out = torch.tensor(colour).view(1, 3, 1, 1).expand(len(images), 3, size, size).clone()
    out[:, :, border : border + inner, border : border + inner] = thumbnails.clamp(0, 1)
    return out
