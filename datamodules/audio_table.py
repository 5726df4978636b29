"""`AudioTableDataModule`: audio clips named in a CSV, TSV or JSON Lines table, with a class, a set of labels or
numbers per clip."""

from __future__ import annotations

from tlkit.datamodules.audio import AudioDataModule
from tlkit.datamodules.audio_files import audio_problem
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.tables import TargetColumns, read_split_tables, row_file
from tlkit.errors import ConfigError
from tlkit.protocols import TargetKind


class AudioTableDataModule(AudioDataModule):
    """Audio clips named in a table (``audio_column``: a path, relative to the table's folder or absolute) with their
    targets: a class per clip (``label_column``), a set of labels per clip (``multi_label``: a JSON list, or names
    joined by ``label_separator``; for ``task: MultiLabel``, sound-event tagging), or one or more numbers
    (``target_columns``; for ``task: Regression``).

    Every row is checked before training: a missing, unreadable or empty clip, an empty label set, a label outside
    ``classes``, or a missing, non-numeric, NaN or infinite target is one line naming the file and line.

    Args:
        train: the training table (.csv, .tsv or .jsonl).
        val: a validation table; default: held out of ``train`` (``val_fraction``).
        test: a test table; default: held out of ``train`` (``test_fraction``).
        audio_column: the column holding each clip's path.
        label_column: the column holding the class, or the set of labels.
        multi_label: each row has a set of labels.
        label_separator: what joins a row's labels when they are one string.
        target_columns: numeric columns, one regression target each (``label_column`` is then not read).
        classes: the class (or label) names in output order; default: those found in ``train``, sorted.

    The other arguments are `AudioDataModule`'s.

    Examples:
        >>> dm = AudioTableDataModule("calls/train.csv", audio_column="file", label_column="speaker")
        >>> dm = AudioTableDataModule("scenes/train.csv", multi_label=True, label_column="events")
    """

    def __init__(
        self,
        train: str,
        *,
        val: str | None = None,
        test: str | None = None,
        audio_column: str = "audio",
        label_column: str = "label",
        multi_label: bool = False,
        label_separator: str = ";",
        target_columns: list[str] | None = None,
        classes: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.targets = TargetColumns.from_arguments(label_column, multi_label, label_separator, target_columns, classes)

    @property
    def target_kind(self) -> TargetKind:
        return self.targets.kind

    def describe_source(self) -> str:
        return repr(self.hparams.train)

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        hp = self.hparams
        files = {"train": hp.train, "val": hp.val, "test": hp.test}
        tables = read_split_tables(files, {"audio_column": hp.audio_column, **self.targets.columns()})
        names, targets = self.targets.read(tables)
        splits = {}
        for name, rows in tables.items():
            clips = [row_file(row, hp.audio_column, where, files[name], "clip") for row, where in rows]
            for (_, where), clip in zip(rows, clips):
                problem = audio_problem(clip)
                if problem is not None:
                    raise ConfigError(f"Expected a readable audio clip at {where}, but {str(clip)!r} is {problem}.")
            splits[name] = Split([str(clip) for clip in clips], targets[name])
        return names, splits
