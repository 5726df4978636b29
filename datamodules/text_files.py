"""`TextFileDataModule`: texts from CSV, TSV or JSON Lines files (with a class, a set of labels, or numeric targets),
or a folder of `.txt` files per class."""

from __future__ import annotations

from pathlib import Path

from tlkit.datamodules.datasets import Split
from tlkit.datamodules.tables import LINES_SUFFIXES, TABLE_SUFFIXES, Record, TargetColumns, read_table
from tlkit.datamodules.text_datamodule import TextDataModule
from tlkit.errors import ConfigError
from tlkit.protocols import TargetKind


def read_records(path: Path, text_column: str, targets: TargetColumns) -> list[Record]:
    """Every row of a text table, or one row per ``<class>/<name>.txt`` file of a folder (its text and its folder's
    name under the configured text and label columns); an empty text is an error naming the file and line."""
    if path.is_file() and path.suffix.lower() not in (*TABLE_SUFFIXES, *LINES_SUFFIXES):
        raise ConfigError(f"Expected a .csv, .tsv, .jsonl file or a folder of <class>/*.txt, but got {str(path)!r}.")
    if path.is_dir():
        if targets.kind != "class":
            raise ConfigError(
                f"Expected a table file for {'label sets' if targets.multi_label else 'numeric targets'}, but "
                f"{str(path)!r} is a folder (a folder of <class>/*.txt holds one class per text)."
            )
        records = _read_folder(path, text_column, targets.label_column)
    else:
        records = read_table(path, {"text_column": text_column, **targets.columns()})
    for row, where in records:
        text = str(row.get(text_column) or "").strip()
        if not text:
            raise ConfigError(f"Expected a non-empty `{text_column}` in every row, but {where} has none.")
        row[text_column] = text
    return records


def _read_folder(folder: Path, text_column: str, label_column: str) -> list[Record]:
    records: list[Record] = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for file in sorted(class_dir.glob("*.txt")):
            text = file.read_text(encoding="utf-8").strip()
            if not text:
                raise ConfigError(f"Expected text in every .txt file, but {file} is empty.")
            records.append(({text_column: text, label_column: class_dir.name}, str(file)))
    if not records:
        raise ConfigError(f"Expected one sub-folder of .txt files per class in {folder}, but found no .txt file.")
    return records


class TextFileDataModule(TextDataModule):
    """Texts from files: CSV, TSV or JSON Lines with a text column and its targets, or a folder holding one
    sub-folder of ``.txt`` files per class (the folder name is the label).

    The targets are a class per text (``label_column``), a set of labels per text (``multi_label``: a JSON list, or
    names joined by ``label_separator``; for ``task: MultiLabel``), or one or more numbers (``target_columns``; for
    ``task: Regression``).

    Args:
        train: the training file or folder.
        val: a validation file or folder; default: held out of ``train`` (``val_fraction``).
        test: a test file or folder; default: held out of ``train`` (``test_fraction``).
        text_column: the column (or JSON key) holding the text.
        label_column: the column (or JSON key) holding the label, or the set of labels.
        multi_label: each row has a set of labels (``a;b``, or a JSON list); empty sets are errors.
        label_separator: what joins a row's labels when they are one string.
        target_columns: numeric columns, one regression target each (``label_column`` is then not read); a
            missing, non-numeric, NaN or infinite value is an error naming the file and line.
        classes: the class (or label) names in output order; default: the labels found in ``train``, sorted. A label
            outside them is an error naming the file and line.

    The other arguments are `TextDataModule`'s.

    Examples:
        >>> dm = TextFileDataModule("reviews/train.csv", text_column="review", label_column="sentiment")
        >>> dm = TextFileDataModule("reviews/train.csv", text_column="review", target_columns=["stars"])
    """

    def __init__(
        self,
        train: str,
        *,
        val: str | None = None,
        test: str | None = None,
        text_column: str = "text",
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

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        hp = self.hparams
        tables = {
            name: read_records(Path(path).expanduser(), hp.text_column, self.targets)
            for name, path in (("train", hp.train), ("val", hp.val), ("test", hp.test))
            if path is not None
        }
        names, read = self.targets.read(tables)
        splits = {name: Split([row[hp.text_column] for row, _ in rows], read[name]) for name, rows in tables.items()}
        return names, splits
