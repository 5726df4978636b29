"""Resumable training order: an epoch-seeded, rank-aware sampler and a DataLoader that resumes mid-epoch.

Lightning saves the ``state_dict`` of every stateful training loader in each checkpoint and restores it before the
resumed run builds its iterator (also inside a CombinedLoader, one state per domain). `ResumableDataLoader` records
the epoch and how many batches of it training consumed; on restore, its `EpochShuffleSampler` regenerates that epoch's
order and skips the consumed part, without loading those samples. Every index carries the seed of its sample's random
transform (`tlkit.randomness.SeededIndex`), so the resumed run also augments each sample exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tlkit.randomness import SeededIndex, mix


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class EpochShuffleSampler(DistributedSampler):
    """Shuffles with permutations seeded by ``(seed, epoch)``, shards them across ranks and yields `SeededIndex`es.

    Lightning calls ``set_epoch`` before every epoch, so epoch ``k`` sees the same order in an uninterrupted run and
    in a resumed one (a plain ``shuffle=True`` draws from the global RNG). It is a ``DistributedSampler``, so under DDP
    Lightning keeps it instead of swapping in its own: each rank takes every ``world_size``-th index of the same
    permutation (padded by wrapping around, as torch's DistributedSampler does), read from the process group when
    iterating.

    Args:
        size: dataset length.
        seed: base seed.
        num_samples: indices per epoch over all ranks; more than ``size`` chains fresh permutations (for
            fixed-length epochs over a small domain). Default ``size``.
        shuffle: ``False`` keeps the dataset's order (the sample seeds still change every epoch).

    Examples:
        >>> sampler = EpochShuffleSampler(1000, seed=0)
        >>> loader = ResumableDataLoader(dataset, batch_size=32, sampler=sampler)
    """

    def __init__(self, size: int, seed: int = 0, num_samples: int | None = None, shuffle: bool = True) -> None:
        # DistributedSampler's own __init__ would read the process group now; this sampler reads it when iterating.
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.epoch_samples = size if num_samples is None else num_samples
        self.drop_last = False
        self._skip = 0

    @property
    def num_replicas(self) -> int:
        return _world()[0]

    @property
    def rank(self) -> int:
        return _world()[1]

    @property
    def num_samples(self) -> int:  # per rank, as in DistributedSampler
        return math.ceil(self.epoch_samples / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, samples: int) -> None:
        """Leave out the first ``samples`` indices of this rank's next iteration (a mid-epoch resume)."""
        self._skip = samples

    def epoch_order(self) -> list[int]:
        """All ranks' indices for the current epoch, before sharding."""
        rounds = -(-self.epoch_samples // self.size)  # whole passes over the data this epoch spans
        if not self.shuffle:
            return (list(range(self.size)) * rounds)[: self.epoch_samples]
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        indices = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(rounds)])
        return indices[: self.epoch_samples].tolist()

    def __iter__(self) -> Iterator[SeededIndex]:
        world, rank = _world()
        order = self.epoch_order()
        total = self.num_samples * world
        order += order[: total - len(order)]  # pad so every rank gets as many indices
        positions = range(rank, total, world)
        skip, self._skip = self._skip, 0
        seed = mix(self.seed, 0, self.epoch)
        return iter([SeededIndex(order[p], mix(seed, p)) for p in positions[skip:]])

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position within an epoch is saved in checkpoints and restored on resume.

    Needs an `EpochShuffleSampler`. ``state_dict`` is ``{"epoch", "batches"}``: the batches of that epoch that
    training consumed (counted as they are handed out, so prefetching workers do not inflate it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochShuffleSampler):
            raise TypeError(f"ResumableDataLoader needs an EpochShuffleSampler, got {type(self.sampler).__name__}.")
        self._consumed = 0
        self._resume_at = 0

    def __iter__(self) -> Iterator[Any]:
        start, self._resume_at = self._resume_at, 0
        if start:
            self.sampler.skip_next(start * self.batch_size)
        iterator = super().__iter__()
        self._consumed = start
        return self._counting(iterator)

    def _counting(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._consumed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        if batches >= len(self):  # saved after the epoch's last batch: the next epoch starts from its beginning
            epoch, batches = epoch + 1, 0
        # Set now: with workers, the iterator draws its first indices as soon as it is created.
        self.sampler.set_epoch(epoch)
        self._resume_at = batches


class StatefulLoader(Protocol):
    """A training loader that can say where it is and go back there: a `ResumableDataLoader`, or LitData's
    `StreamingDataLoader` (shards)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


L = TypeVar("L", bound=StatefulLoader)


class LoaderPositions:
    """The training loaders a datamodule built, and their positions to restore from a checkpoint.

    A datamodule saves these positions in its own ``state_dict``, which Lightning restores before anything builds a
    loader. Lightning's own restore of stateful loaders comes too late whenever the train loader is built early (a
    default cosine schedule asks for ``estimated_stepping_batches`` while the optimizers are configured).
    """

    def __init__(self) -> None:
        self.loaders: dict[str, StatefulLoader] = {}
        self.pending: dict[str, dict[str, Any]] = {}

    def track(self, name: str, loader: L) -> L:
        """Remember ``loader`` and move it to its restored position, if a checkpoint holds one."""
        if name in self.pending:
            loader.load_state_dict(self.pending.pop(name))
        self.loaders[name] = loader
        return loader

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {name: loader.state_dict() for name, loader in self.loaders.items()}

    def load_state_dict(self, state_dict: dict[str, dict[str, Any]]) -> None:
        self.pending = dict(state_dict)


class ResumableTrainLoaders:
    """Datamodule mixin: the training loaders' positions go into the datamodule's ``state_dict``.

    Lightning restores a datamodule's state before anything builds a loader, so `track_train_loader` can move each
    new training loader to where the checkpointed run was (see `LoaderPositions`).
    """

    @property
    def _loader_positions(self) -> LoaderPositions:
        # Created on first use, so a datamodule's own __init__ needs no call for it.
        positions = self.__dict__.get("_tlkit_loader_positions")
        if positions is None:
            positions = self.__dict__["_tlkit_loader_positions"] = LoaderPositions()
        return positions

    def track_train_loader(self, name: str, loader: L) -> L:
        return self._loader_positions.track(name, loader)

    def training_loader(
        self, name: str, dataset: Dataset, num_samples: int | None = None, seed_offset: int = 0, drop_last: bool = False
    ) -> ResumableDataLoader:
        """A shuffled loader over ``dataset`` whose position (epoch, batches consumed) checkpoints save as ``name``
        (the datamodule's ``_loader_options`` give the batch size, workers and collation)."""
        sampler = EpochShuffleSampler(len(dataset), self.hparams.seed + seed_offset, num_samples)
        loader = ResumableDataLoader(dataset, sampler=sampler, drop_last=drop_last, **self._loader_options())
        return self.track_train_loader(name, loader)

    def state_dict(self) -> dict[str, Any]:
        """Each training loader's position (epoch, batches consumed), so a resumed run continues mid-epoch."""
        return {"train_loaders": self._loader_positions.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loader_positions.load_state_dict(state_dict.get("train_loaders", {}))
