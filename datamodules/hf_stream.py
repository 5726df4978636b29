"""A streamed Hugging Face dataset split (``streaming: true``) served as tlkit serves files: shuffled, shared across
ranks with every row once per epoch and equal steps, and resumed mid-epoch exactly.

The stream is read in the main process by `StreamSampler`, which hands each row to the DataLoader's workers inside
the index itself (`StreamedRow`); the workers decode and augment it (`StreamedImages`). So the order of batches is
the sampler's, whatever the number of workers, and `ResumableDataLoader` saves and restores the position as it does
for a folder: on resume the epoch's stream is read again from its start, and the rows already trained on are passed
over before any worker decodes them.

Each epoch: the split is shuffled by ``datasets`` itself (its shards' order, then rows through a buffer; seeded by
the run seed, reseeded by the epoch), and rank ``r`` of ``w`` keeps rows ``r, r + w, r + 2w, ...`` of that stream,
as ``datasets.distributed.split_dataset_by_node`` does when it splits by rows. The rows each rank gets are then
known from the split's size (counted at setup), so every rank takes as many steps: a rank one row short repeats its
first row, as torch's ``DistributedSampler`` pads. (Splitting by shards instead, what ``split_dataset_by_node``
picks when the shards divide evenly, would give ranks counts nobody knows before reading them: unequal steps hang
DDP.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from tlkit.datamodules.datasets import to_rgb
from tlkit.datamodules.hf_source import RowTargets, check_media_feature, import_datasets
from tlkit.datamodules.sampling import EpochShuffleSampler
from tlkit.errors import ConfigError
from tlkit.randomness import SeededIndex, mix, sample_seed, seeded


class StreamedRow(SeededIndex):
    """A streamed row as a DataLoader index: its place (the row's index in the split for evaluation, its place in
    this rank's epoch for training), the seed of its augmentation, and the row itself (``row``)."""

    row: dict[str, Any]

    def __new__(cls, index: int, seed: int | None, row: dict[str, Any]) -> StreamedRow:
        value = super().__new__(cls, index, seed)
        value.row = row
        return value

    def __reduce__(self):  # travels to DataLoader workers with its row
        return StreamedRow, (int(self), self.seed, self.row)


def image_stream(stream: Any, image_column: str, target_columns: list[str], where: str) -> Any:
    """The columns a sample needs, images left encoded (``{"bytes", "path"}``) so the main process only reads them
    and the workers decode."""
    datasets = import_datasets()
    check_media_feature(stream.features[image_column], datasets.Image, "image_column", image_column, "images", where)
    columns = list(dict.fromkeys([image_column, *target_columns]))
    return stream.select_columns(columns).cast_column(image_column, datasets.Image(decode=False))


class StreamSampler(EpochShuffleSampler):
    """This rank's rows of a streamed split, in the epoch's order, as `StreamedRow`s.

    Args:
        stream: the split as an ``IterableDataset`` (from `image_stream`).
        size: the split's rows (counted at setup).
        seed: the shuffle's and the augmentation's seed.
        shuffle: shuffle through ``datasets``' buffer (training); False reads the split in order.
        buffer: rows in the shuffle buffer.
        pad: give every rank as many rows (training and evaluation: equal steps); False gives each rank its own
            rows only (prediction: each row once).
        where: the split as errors name it.

    It is an `EpochShuffleSampler`, so `ResumableDataLoader` resumes it and Lightning keeps it under DDP.
    """

    def __init__(self, stream: Any, size: int, seed: int, shuffle: bool, buffer: int, pad: bool, where: str) -> None:
        super().__init__(size, seed, shuffle=shuffle)
        self.stream, self.buffer, self.pad, self.where = stream, buffer, pad, where

    def __len__(self) -> int:
        if self.pad:
            return self.num_samples
        return len(range(self.rank, self.size, self.num_replicas))

    def _epoch_rows(self, world: int, rank: int) -> Iterator[dict[str, Any]]:
        """This rank's rows of the epoch's stream, once."""
        stream = self.stream
        if self.shuffle:
            stream = stream.shuffle(seed=self.seed, buffer_size=self.buffer)
            stream.set_epoch(self.epoch)
        return itertools.islice(iter(stream), rank, None, world)

    def __iter__(self) -> Iterator[StreamedRow]:
        world, rank = self.num_replicas, self.rank
        wanted, skip = len(self), self._skip
        self._skip = 0
        epoch_seed = mix(self.seed, 0, self.epoch)
        rows = self._padded(world, rank, wanted)
        for place, row in enumerate(itertools.islice(rows, skip, wanted), start=skip):
            # Evaluation names a row by its index in the split (rank r holds rows r, r + w, ...).
            index = place if self.shuffle else rank + place * world
            yield StreamedRow(index, mix(epoch_seed, rank, place) if self.shuffle else None, row)

    def _padded(self, world: int, rank: int, wanted: int) -> Iterator[dict[str, Any]]:
        """This rank's rows, then its first ones again until there are ``wanted``."""
        share = len(range(rank, self.size, world))
        first: list[dict[str, Any]] = []  # kept for the padding: at most one row, as the rows divide among the ranks
        read = 0
        for row in self._epoch_rows(world, rank):
            if read < wanted - share:
                first.append(row)
            read += 1
            yield row
        if read < min(share, wanted):
            raise ConfigError(
                f"Expected {self.size} rows in {self.where}, as at setup, but its stream holds fewer now: the dataset "
                "changed while the run read it; pin a `revision`."
            )
        yield from first[: wanted - read]


class StreamedImages(Dataset):
    """Streamed rows decoded into images and transformed (with the seed their index carries), with their targets.

    Only `StreamSampler`'s indices carry rows: a plain index (reading rows one by one, as `tlkit rank` does) is a
    one-line error."""

    def __init__(
        self,
        image_column: str,
        transform: Callable | None,
        targets: RowTargets,
        size: int,
        where: str,
    ) -> None:
        self.image_column, self.transform, self.targets = image_column, transform, targets
        self.size, self.where = size, where

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not isinstance(index, StreamedRow):
            refuse_row_reading(self.where, int(index))
        place = f"{self.where}, streamed row {int(index)}"
        image = self._decode(index.row[self.image_column], place)
        if self.transform is not None:
            with seeded(sample_seed(index)):
                image = self.transform(image)
        return image, self.targets(index.row, place)

    def _decode(self, stored: dict[str, Any], place: str) -> Image.Image:
        try:
            return to_rgb(import_datasets().Image().decode_example(stored))
        except (OSError, SyntaxError, ValueError) as err:  # what PIL raises for truncated or damaged data
            name = stored.get("path") or "its image bytes"
            raise ConfigError(
                f"Expected a readable image in `{self.image_column}` of every row, but {place} ({name}) is not one "
                f"({err}): a streamed dataset is not checked before training; fix the row, or set "
                "`streaming: false` to check every image first."
            ) from None


def refuse_row_reading(where: str, row: int) -> None:
    """A stream is read in order: asking for one row on its own (`tlkit rank`) is a one-line error."""
    raise ConfigError(
        f"Expected rows of {where} in the order they stream, but a command asked for row {row} on its own: set "
        "`streaming: false` (a downloaded dataset is read row by row) for this command."
    )
