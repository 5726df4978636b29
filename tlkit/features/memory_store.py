"""`MemoryStore`: features kept in this process for later runs, bounded, least recently used first out."""

from __future__ import annotations

from collections import OrderedDict

import torch


class MemoryStore:
    """Features kept in this process for reuse by later runs, least recently used first out past ``max_bytes``.

    Args:
        max_bytes: budget for all stored tensors (default 2 GiB); the entry just stored is always kept.
    """

    def __init__(self, max_bytes: int = 2 * 1024**3) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @staticmethod
    def _size(entry: tuple[torch.Tensor, torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in entry)

    @property
    def nbytes(self) -> int:
        return sum(self._size(entry) for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: tuple[torch.Tensor, torch.Tensor]) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > 1 and self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
