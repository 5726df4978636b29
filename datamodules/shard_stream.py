"""`ShardStream`: one split of LitData shards as a LitData `StreamingDataset` that yields (image, target), each
image decoded and transformed with its augmentation seeded by (run seed, epoch, row). Imported only where shards are
read, since it imports litdata."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from litdata import StreamingDataset
from PIL import Image

from tlkit.datamodules.datasets import to_rgb
from tlkit.randomness import mix, seeded


def decode_image(data: bytes) -> Image.Image:
    """A stored image's bytes as 8-bit RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return to_rgb(image)


class ShardStream(StreamingDataset):
    """A split of shards, transformed (``transform``: None keeps the PIL image) and shuffled with ``seed``."""

    def __init__(self, location: str, transform: Any, seed: int, shuffle: bool, cache_dir: str | None = None) -> None:
        super().__init__(location, shuffle=shuffle, seed=seed, cache_dir=cache_dir)
        self.image_transform, self.run_seed = transform, seed

    def __getitem__(self, index: Any) -> tuple[Any, Any]:
        item = super().__getitem__(index)
        image = decode_image(item["image"])
        if self.image_transform is not None:
            # The same augmentation wherever the row falls in the stream: a resumed run sees what the first one did.
            with seeded(mix(self.run_seed, self.current_epoch, int(item["row"]))):
                image = self.image_transform(image)
        target = item["target"]
        return image, (int(target) if np.ndim(target) == 0 else np.asarray(target, dtype=np.float32))
