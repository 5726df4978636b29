"""Counter-based randomness: every random draw of training is a function of (seed, epoch, position), never of history.

A resumed run must draw exactly the random numbers the uninterrupted run would have drawn. Saving and restoring the
global RNG states is fragile: anything that runs between the save and the next step (a sanity check, a validation
loader starting its workers, a callback) moves the stream, and DataLoader workers keep RNG states of their own. So
tlkit derives randomness from counters that a checkpoint already holds:

- data augmentation: each training sample is transformed under a seed derived from (seed, epoch, its position in the
  epoch's order), whichever process or worker loads it (`SeededIndex`, `seeded`);
- model randomness (dropout, stochastic depth, randomized maps): the global RNGs are reseeded before every training
  batch from (seed, epoch, batch index, rank) (`reseed_for_step`).

The seed itself travels in the checkpoint, so a resume needs no ``seed_everything``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import get_worker_info

# Large odd multipliers spread neighbouring counters over the 63-bit seed space (a splitmix-style mix, below).
_MASK = (1 << 63) - 1


def mix(*counters: int) -> int:
    """A 63-bit seed from integer counters; different tuples give unrelated seeds."""
    value = 0x9E3779B97F4A7C15
    for counter in counters:
        value = (value ^ (counter & _MASK)) * 0xBF58476D1CE4E5B9 & ((1 << 64) - 1)
        value ^= value >> 31
        value = value * 0x94D049BB133111EB & ((1 << 64) - 1)
        value ^= value >> 29
    return value & _MASK


def default_seed() -> int:
    """The run's base seed: ``seed_everything``'s (``PL_GLOBAL_SEED``), else the seed torch started with."""
    return int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() & 0x7FFFFFFF))


def reseed(seed: int) -> None:
    """Seed torch's (CPU, and CUDA once in use), numpy's and Python's global generators from one 63-bit seed.

    ``torch.manual_seed`` also queues a seed for every device type on each call: 85 us on a CUDA build even when no
    GPU is used, against 1 us for the CPU generator alone. This runs before every training batch and every
    augmented sample, so it seeds only the generators in use.
    """
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    elif torch.backends.mps.is_available():
        torch.manual_seed(seed)  # Apple GPUs: torch's own path covers them
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)


def reseed_for_step(seed: int, epoch: int, batch_idx: int, rank: int) -> None:
    """Reseed the global generators for one training batch (ranks draw different dropout masks)."""
    reseed(mix(seed, 1, epoch, batch_idx, rank))


class SeededIndex(int):
    """A dataset index that carries the seed its sample's random transform must use.

    It is an ``int``, so any dataset indexes with it unchanged; tlkit's datasets run their training transform under
    `seeded` (``index.seed``), which makes augmentation independent of worker count, rank and resume point.
    """

    seed: int

    def __new__(cls, index: int, seed: int) -> SeededIndex:
        value = super().__new__(cls, index)
        value.seed = seed
        return value

    def __reduce__(self):  # travels to DataLoader workers with its seed
        return SeededIndex, (int(self), self.seed)


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with the global generators seeded from ``seed``.

    In the main process their states are restored afterwards, so loading a sample never disturbs the caller's random
    stream. In a DataLoader worker nothing else draws from them and every sample reseeds, so the save and restore
    (66 us for numpy's state alone, more than a small image's transform) is skipped. ``None`` runs the block unchanged
    (evaluation, or an index without a seed).
    """
    if seed is None:
        yield
        return
    if get_worker_info() is not None:
        reseed(seed)
        yield
        return
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    reseed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def sample_seed(index: int) -> int | None:
    """The seed an index carries (`SeededIndex`), or None for a plain index."""
    return index.seed if isinstance(index, SeededIndex) else None
