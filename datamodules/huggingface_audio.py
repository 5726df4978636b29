"""`HuggingFaceAudioDataModule`: the audio of a Hugging Face dataset (an ``Audio`` column, the ``audiofolder``
builder, or columns of paths or bytes) with its targets: a class, a set of labels, or numbers."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from tlkit.datamodules.audio import AudioDataModule
from tlkit.datamodules.audio_files import header_problem, read_audio
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.hf_source import HubRow, HubSource, check_media_feature, import_datasets
from tlkit.datamodules.huggingface import HubData
from tlkit.datamodules.tables import TargetColumns
from tlkit.errors import ConfigError


class HuggingFaceAudioDataModule(HubData, AudioDataModule):
    """Audio clips of a Hugging Face dataset with their targets, read as `HuggingFaceImageDataModule` reads images:
    a class per clip (a ``ClassLabel``, whose names and order are kept, or class names), a set of labels, or numbers.
    Clips are decoded by soundfile from the dataset's stored bytes (or files), mixed to mono and resampled to the
    backbone's rate; every clip's header is checked at setup.

    Args:
        path: a Hub name (``superb``, ``speech_commands``), a ``save_to_disk`` folder, a data file, or a packaged
            builder (``audiofolder``, ``parquet``) with ``data_files``.
        name: the dataset's configuration (``speech_commands``: ``v0.02``).
        revision: a Hub branch, tag or commit.
        data_files: a builder's files: a pattern, a list, or ``{train: ..., test: ...}``.
        splits: which of the dataset's splits serve as ``train``, ``val`` and ``test``.
        audio_column: the column of clips (an ``Audio`` feature, or paths or bytes of audio files).
        label_column: the column of the class, or of the label set.
        multi_label: each row has a set of labels.
        label_separator: what joins a row's labels when they are one string.
        target_columns: numeric columns, one regression target each.
        classes: the class names in output order where the label column does not carry them.

    The other arguments are `AudioDataModule`'s.

    Examples:
        >>> dm = HuggingFaceAudioDataModule("audiofolder", data_files={"train": "clips/**"})
    """

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        revision: str | None = None,
        data_files: Any = None,
        splits: dict[str, str | None] | None = None,
        audio_column: str = "audio",
        label_column: str = "label",
        multi_label: bool = False,
        label_separator: str = ";",
        target_columns: list[str] | None = None,
        classes: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.source = HubSource(path, name, revision, data_files, dict(splits or {}))
        self.targets = TargetColumns.from_arguments(label_column, multi_label, label_separator, target_columns, classes)
        self._clips: dict[str, Any] = {}  # the dataset's split name -> its audio column, left encoded

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        column = self.hparams.audio_column
        hub = self.read_hub(column, "audio_column")
        splits = {}
        for split, table in hub.tables.items():
            name = hub.split_names[split]
            self._clips[name] = clips = encoded_audio(table, column, self.source.describe_split(name))
            for row in range(len(clips)):
                problem = header_problem(_opened(clips[row][column]))
                if problem is not None:
                    raise ConfigError(
                        f"Expected a readable clip in `{column}` of every row, but {self.source.describe()} split "
                        f"{name!r} row {row} is {problem}."
                    )
            splits[split] = Split(hub.rows(split), hub.targets[split])
        return hub.classes, splits

    def load_clip(self, sample: HubRow, sample_rate: int) -> np.ndarray:
        return read_audio(_opened(self._clips[sample.split][sample.row][self.hparams.audio_column]), sample_rate)


def encoded_audio(table: Any, column: str, where: str) -> Any:
    """The split's ``column`` as stored audio files (``{"bytes", "path"}`` per row, never decoded by `datasets`): an
    ``Audio`` feature as it is, paths or bytes cast to one."""
    datasets = import_datasets()
    check_media_feature(table.features[column], datasets.Audio, "audio_column", column, "audio", where)
    return table.select_columns([column]).cast_column(column, datasets.Audio(decode=False))


def _opened(stored: dict[str, Any]) -> Any:
    """A stored clip as soundfile opens it: its bytes, else its file."""
    return io.BytesIO(stored["bytes"]) if stored.get("bytes") else stored["path"]
