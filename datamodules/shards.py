"""LitData shards: any tlkit image datamodule written as LitData's optimized chunks (`write_shards`, ``tlkit
shards``), and `ShardsDataModule` streaming them back from a local folder or object storage.

A shards folder holds one LitData dataset per split (``train/``, ``val/``, ``test/``: chunk files and LitData's
``index.json``), each split's targets in row order (``targets.npy``: read at setup, so splits, limited-label checks and
tasks need no pass over the data), and ``tlkit.json`` (the output names and the target kind). An image is stored as
its file's bytes where it is a plain image file (the JPEG stays the JPEG), else as a lossless PNG of the 8-bit RGB
image tlkit decoded (DICOM, NIfTI slices, dataset rows, images in memory).

Training reads through LitData's `StreamingDataLoader`: chunks shuffled and split across ranks and nodes by LitData,
every sample once per epoch, and the loader's position saved in every checkpoint, so a run killed mid-epoch and
continued with ``--ckpt_path last`` ends bitwise equal to the uninterrupted one. A sample's augmentation is seeded by
the run seed, the epoch and the sample's row, never by where it fell in the stream.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from tlkit.datamodules.classification import ClassificationDataModule
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.folders import IMAGE_EXTENSIONS
from tlkit.errors import ConfigError, import_optional
from tlkit.protocols import DescribesTargets, TargetKind

METADATA = "tlkit.json"
TARGETS = "targets.npy"
SPLITS = ("train", "val", "test")
#: Target kinds a shard holds (one array per sample); masks and boxes are not written yet.
SHARDABLE_KINDS = ("class", "labels", "values")


def _litdata():
    return import_optional("litdata", "for shards", "shards")


# ------------------------------------------------------------------------------------------------- writing
class ShardItem:
    """What one row of a split becomes in a shard: the image's bytes, its target and its row."""

    def __init__(self, datamodule: Any, split: Split) -> None:
        self.datamodule, self.split = datamodule, split

    def __call__(self, row: int) -> dict[str, Any]:
        sample = self.split.samples[row]
        target = self.split.labels[row]
        return {"image": self._image_bytes(sample), "target": _stored_target(target), "row": row}

    def _image_bytes(self, sample: Any) -> bytes:
        if isinstance(sample, (str, Path)) and Path(sample).suffix.lower() in IMAGE_EXTENSIONS:
            return Path(sample).read_bytes()  # the file as it is: no second lossy encoding
        buffer = io.BytesIO()
        self.datamodule.load_image(sample).save(buffer, format="PNG")
        return buffer.getvalue()


def _stored_target(target: Any) -> Any:
    return int(target) if isinstance(target, (int, np.integer)) else np.asarray(target, dtype=np.float32)


def write_shards(datamodule: Any, output_dir: str | Path, chunk_bytes: str = "64MB") -> dict[str, int]:
    """Write every split of ``datamodule`` (after its ``setup``) as LitData shards in ``output_dir``, which must not
    exist or be empty (nothing is overwritten); returns the samples written per split."""
    _litdata()
    from litdata.streaming.writer import BinaryWriter

    kind = datamodule.target_kind if isinstance(datamodule, DescribesTargets) else "class"
    if kind not in SHARDABLE_KINDS:
        raise ConfigError(
            f"Expected a datamodule of classes, label sets or numbers for shards, but {type(datamodule).__name__} "
            f"serves {kind}: masks and boxes are not written as shards yet."
        )
    out = Path(output_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"Expected `output_dir` {str(out)!r} to be new or empty, but it holds files: pick another.")
    datamodule.setup("fit")
    written = {}
    for name in SPLITS:
        split = datamodule.splits.get(name)
        if split is None or not split.samples:
            continue
        (out / name).mkdir(parents=True)
        # In this process, row by row (LitData's `optimize` would start worker processes that import tlkit again).
        writer = BinaryWriter(str(out / name), chunk_bytes=chunk_bytes)
        item = ShardItem(datamodule, split)
        for row in range(len(split.samples)):
            writer.add_item(row, item(row))
        writer.done()
        writer.merge()
        np.save(out / name / TARGETS, np.stack([np.asarray(_stored_target(t)) for t in split.labels]))
        written[name] = len(split.samples)
    metadata = {"classes": list(datamodule.classes), "target_kind": kind, "splits": written}
    (out / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    return written


# ------------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class ShardRow:
    """One sample of a split of shards: the split, the row, and a stamp of the split's shards as written (the hash
    of its LitData index, which changes whenever they are written again)."""

    split: str
    row: int
    stamp: str = ""

    def __str__(self) -> str:
        return f"{self.split}/{self.row}"

    def fingerprint(self) -> bytes:
        """What the feature cache keys this sample by (`tlkit.protocols.Fingerprinted`)."""
        return f"{self.stamp}:{self.split}:{self.row}".encode()


class ShardsDataModule(ClassificationDataModule):
    """Images streamed from LitData shards that `write_shards` (``tlkit shards``) wrote: a local folder, or a folder on
    object storage (``s3://bucket/shards``, ``gs://...``; ``local:/path`` reads a local folder as LitData reads a
    remote one, through its chunk cache).

    The shards hold their own splits (as the datamodule they were written from split its data) and targets; the
    task is whatever they hold (classes, label sets or numbers). Training streams shuffled chunks, shared across
    ranks and nodes by LitData, and resumes mid-epoch exactly.

    Args:
        path: the shards folder (holding ``tlkit.json``, ``train/``, and ``val/``, ``test/`` where written).
        cache_dir: where LitData keeps chunks of remote shards (default: its own).

    The other arguments are `ImageDataModule`'s (``val_fraction``, ``test_fraction``, ``labels_per_class`` and
    ``train_fraction`` do not apply: the shards hold their splits).

    Examples:
        >>> dm = ShardsDataModule("shards/flowers")
        >>> dm = ShardsDataModule("s3://my-bucket/flowers-shards", cache_dir="/scratch/litdata")
    """

    def __init__(self, path: str, *, cache_dir: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        for limit in ("labels_per_class", "train_fraction"):
            if self.hparams[limit] is not None:
                raise ConfigError(
                    f"Expected `{limit}` unset for shards, but got {self.hparams[limit]!r}: shards hold their splits "
                    "as written; write them from a datamodule with the limit instead."
                )
        self._metadata: dict[str, Any] | None = None
        self._readers: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------ metadata
    def _location(self, split: str | None = None) -> str:
        base = self.hparams.path.rstrip("/")
        return base if split is None else f"{base}/{split}"

    def _read(self, name: str) -> bytes:
        """A file of the shards folder: local, ``local:`` or on object storage (fsspec)."""
        location = self.hparams.path.rstrip("/") + "/" + name
        if "://" not in location:
            local = Path(location.removeprefix("local:")).expanduser()
            if not local.is_file():
                raise ConfigError(
                    f"Expected `path` {self.hparams.path!r} to be a shards folder written by tlkit (`tlkit shards`), "
                    f"but {str(local)!r} does not exist."
                )
            return local.read_bytes()
        import fsspec

        with fsspec.open(location, "rb") as file:
            return file.read()

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = json.loads(self._read(METADATA))
        return self._metadata

    @property
    def target_kind(self) -> TargetKind:
        return self.metadata["target_kind"]

    def describe_source(self) -> str:
        return repr(self.hparams.path)

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        splits = {}
        for name, count in self.metadata["splits"].items():
            targets = np.load(io.BytesIO(self._read(f"{name}/{TARGETS}")))
            labels = [int(t) for t in targets] if self.target_kind == "class" else list(targets.astype(np.float32))
            if len(labels) != count:
                raise ConfigError(
                    f"Expected {count} targets in {name}/{TARGETS} of {self.hparams.path!r}, but got {len(labels)}."
                )
            stamp = hashlib.sha256(self._read(f"{name}/index.json")).hexdigest()
            splits[name] = Split([ShardRow(name, i, stamp) for i in range(count)], labels)
        if "train" not in splits:
            raise ConfigError(f"Expected a train split in the shards {self.hparams.path!r}, but it has none.")
        return list(self.metadata["classes"]), splits

    def make_splits(self, loaded: dict[str, Split]) -> dict[str, Split]:
        return loaded  # the shards' own splits, as written

    def data_source(self) -> dict[str, Any] | None:
        """What a checkpoint records of the data: the shards' location and each split's stamp (the hash of its LitData
        index), `tlkit.protocols.RecordsDataSource`."""
        if not self.splits:
            return None
        stamps = {name: split.samples[0].stamp for name, split in self.splits.items() if split.samples}
        return {"source": "litdata", "path": self.hparams.path, "splits": stamps}

    # ------------------------------------------------------------------------------------------- loaders
    def _shard_dataset(self, split: str, train: bool, shuffle: bool):
        hp = self.hparams
        transform, _ = self.split_transform(split, train)
        from tlkit.datamodules.shard_stream import ShardStream

        return ShardStream(self._location(split), transform, hp.seed, shuffle, hp.cache_dir)

    def _stream(self, dataset: Any, num_workers: int | None = None) -> Any:
        hp = self.hparams
        workers = hp.num_workers if num_workers is None else num_workers
        return _litdata().StreamingDataLoader(
            dataset, batch_size=hp.batch_size, num_workers=workers, pin_memory=hp.pin_memory
        )

    def train_dataloader(self) -> Any:
        serving = self.feature_serving
        if serving is not None and serving.active:
            rank_zero_info(
                "FeatureCache: shards are streamed, so their features are not cached; the backbone runs every step."
            )
        loader = self._stream(self._shard_dataset("train", train=True, shuffle=True))
        return self.track_train_loader("train", loader)

    def evaluation_loader(self, split: str) -> Any:
        if split not in self.splits:
            return []
        return self._stream(self._shard_dataset(split, train=False, shuffle=False))

    def predict_dataloader(self) -> Any:
        if self.hparams.predict_dir is None:
            self._refuse_remote("to predict their test split (give --data.predict_dir instead)")
        return super().predict_dataloader()  # the test split read row by row, in order, as its names say

    def _refuse_remote(self, purpose: str) -> None:
        """LitData reads remote shards as a stream only: reading rows one by one needs them on a local disk."""
        if self._is_remote():
            raise ConfigError(
                f"Expected local shards {purpose}, but `path` is {self.hparams.path!r}: copy the shards to a local "
                "folder for this command."
            )

    def _is_remote(self) -> bool:
        return "://" in self.hparams.path or self.hparams.path.startswith("local:")

    def load_image(self, sample: ShardRow) -> Image.Image:
        """One row's image, read from local shards (training and evaluation stream instead)."""
        from tlkit.datamodules.shard_stream import ShardStream

        self._refuse_remote("to read rows one by one (`tlkit rank`, predict)")
        if sample.split not in self._readers:  # one reader per split, in each worker process
            self._readers[sample.split] = ShardStream(self._location(sample.split), None, self.hparams.seed, False)
        return self._readers[sample.split][sample.row][0]
