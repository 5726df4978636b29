"""`FeatureCache`: compute a frozen backbone's features once and reuse them across epochs and runs.

A linear probe (FeatureExtraction) otherwise runs the same frozen backbone over the same images every epoch: with
deterministic transforms its output is a pure function of (weights, transform, image), so it is computed once and
the head trains on the stored features. The key covers all three, so changing any of them computes afresh.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from tlkit.checkpoint import load_file
from tlkit.features.extraction import compute_features
from tlkit.features.fingerprint import weights_fingerprint
from tlkit.features.memory_store import MemoryStore

CacheMode = Literal["memory", "disk"]


class FeatureCache:
    """Features of a frozen backbone, keyed by backbone weights, transform and data; in memory or on disk.

    Args:
        mode: ``memory`` (kept in this process's `FeatureCache.memory`, shared by every cache in it and bounded by its
            ``max_bytes``) or ``disk``.
        directory: where ``disk`` mode stores ``<key>.pt`` files.
        batch_size: images per backbone pass while computing.

    Examples:
        >>> cache = FeatureCache("disk", ".tlkit_cache")
        >>> features = cache.dataset(backbone, dataset, data_key="digits-train", transform=str(transform))
    """

    #: The process-wide store of ``memory`` mode: ``FeatureCache.memory.clear()`` empties it, ``.max_bytes`` bounds it.
    memory = MemoryStore()

    def __init__(self, mode: CacheMode = "memory", directory: str | Path | None = None, batch_size: int = 128):
        if mode == "disk" and directory is None:
            raise ValueError("FeatureCache(mode='disk') needs a directory.")
        self.mode, self.batch_size = mode, batch_size
        self.directory = Path(directory) if directory is not None else None
        self.computed = 0  # how many times features were computed rather than reused (for tests and logs)

    def key(self, backbone: nn.Module, data_key: str, transform: str) -> str:
        parts = (weights_fingerprint(backbone), data_key, transform)
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]

    def dataset(
        self,
        backbone: nn.Module,
        dataset: Dataset,
        data_key: str,
        transform: str,
        name: str = "",
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> Dataset:
        """A TensorDataset of (features, label) for ``dataset``, computed now or reused.

        ``collate_fn`` batches ``dataset``'s samples for the backbone (a text datamodule's tokenizer); default: torch's.
        """
        key = self.key(backbone, data_key, transform)
        stored = self._load(key)
        if stored is None:
            started = time.perf_counter()
            stored = compute_features(backbone, dataset, self.batch_size, collate_fn)
            self.computed += 1
            self._store(key, stored)
            rank_zero_info(
                f"FeatureCache: computed {name or 'split'} features ({len(stored[1])} samples) in "
                f"{time.perf_counter() - started:.1f} s, kept in {self.mode}"
            )
        return TensorDataset(*stored)

    def _load(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.mode == "memory":
            return self.memory.get(key)
        path = self.directory / f"{key}.pt"
        if path.is_file():
            stored = load_file(path, "feature cache file", "cached features")
            return stored["features"], stored["labels"]
        return None

    def _store(self, key: str, stored: tuple[torch.Tensor, torch.Tensor]) -> None:
        if self.mode == "memory":
            self.memory.put(key, stored)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # Write then rename, so an interrupted run never leaves a truncated cache file behind.
        partial = self.directory / f"{key}.pt.partial"
        torch.save({"features": stored[0], "labels": stored[1]}, partial)
        partial.replace(self.directory / f"{key}.pt")
