"""Callbacks that change which layer groups train and how fast, resumable and DDP-safe."""

from tlkit.callbacks.lr_warmup import LRWarmup
from tlkit.callbacks.progressive_unfreezing import ProgressiveUnfreezing

__all__ = ["LRWarmup", "ProgressiveUnfreezing"]
