"""`FeatureServing`: datasets that yield a frozen backbone's cached features instead of images, while switched on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from tlkit.data_request import Features
from tlkit.features import FeatureCache


class FeatureServing:
    """Serve ``backbone``'s features from ``cache`` in place of images, while `active`.

    A model hands one to its datamodule (in its `DataRequest`) while its whole backbone is a fixed function:
    `FeatureExtraction` always, `ProgressiveUnfreezing` during its head-only phase. The datamodule wraps each split
    whose transform is deterministic with `dataset`.

    The switch is read at every item from memory shared with dataloader workers: Lightning builds the loaders before
    an epoch's phase change and keeps them across epochs, so turning serving off needs no loader rebuilt.

    Args:
        cache: where features are computed once and kept.
        backbone: the frozen backbone whose features are served.
        active: whether features are served from the start.

    Examples:
        >>> serving = FeatureServing(FeatureCache("memory"), model.backbone)
        >>> features = serving.dataset(images, data_key="digits-train", transform=repr(transform))
    """

    def __init__(self, cache: FeatureCache, backbone: nn.Module, active: bool = True) -> None:
        self.cache, self.backbone = cache, backbone
        self._active = torch.tensor(active).share_memory_()

    @property
    def active(self) -> bool:
        return bool(self._active)

    def set_active(self, active: bool) -> None:
        """Serve features (True) or the images (False) from now on, in this process and its loader workers."""
        self._active.fill_(active)

    def dataset(
        self,
        images: Dataset,
        data_key: str,
        transform: str,
        name: str = "",
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> Dataset:
        """``images`` (yielding (image, label)) as a dataset yielding (`Features`, label) while serving is active.

        Nothing is computed when serving is already off (a run resumed after its head-only phase). ``collate_fn``
        batches the samples for the backbone (a text datamodule's tokenizer).
        """
        if not self.active:
            return images
        features = self.cache.dataset(self.backbone, images, data_key, transform, name, collate_fn)
        return ServedFeatures(images, features, self._active)


class ServedFeatures(Dataset):
    """(`Features`, label) from ``features`` while ``active`` holds true, else ``images``' (image, label)."""

    def __init__(self, images: Dataset, features: Dataset, active: torch.Tensor) -> None:
        self.images, self.features, self._active = images, features, active

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Any:
        if not bool(self._active):
            return self.images[index]
        values, label = self.features[index]
        return Features(values), label
