"""`TextFileDataModule`: labelled texts from CSV, TSV or JSON Lines files, or a folder of `.txt` files per class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from tlkit.datamodules.datasets import Split
from tlkit.datamodules.text_datamodule import TextDataModule
from tlkit.errors import ConfigError, closest

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
LINES_SUFFIXES = (".jsonl", ".json")

Rows = list[tuple[str, str, str]]  # (text, label, where: "file:line")


def read_rows(path: Path, text_column: str, label_column: str) -> Rows:
    """(text, label, location) for every row of a CSV/TSV/JSON Lines file, or every ``<class>/<name>.txt`` file of a
    folder; a missing column or an empty text is a ConfigError naming the file and line."""
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise ConfigError(f"Expected a text file or folder, but {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file, delimiter=TABLE_SUFFIXES[suffix])
            _check_columns(path, list(reader.fieldnames or []), text_column, label_column)
            records = [(row, f"{path}:{i + 2}") for i, row in enumerate(reader)]  # line 1 is the header
    elif suffix in LINES_SUFFIXES:
        records = []
        with path.open(encoding="utf-8") as file:
            for i, line in enumerate(file):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(f"Expected one JSON object per line in {path}, but line {i + 1}: {err}") from None
                if not isinstance(row, dict):
                    raise ConfigError(f"Expected one JSON object per line in {path}, but line {i + 1} is not one.")
                _check_columns(path, list(row), text_column, label_column, f" (line {i + 1})")
                records.append((row, f"{path}:{i + 1}"))
    else:
        raise ConfigError(f"Expected a .csv, .tsv, .jsonl file or a folder of <class>/*.txt, but got {str(path)!r}.")
    rows = []
    for row, where in records:
        text = str(row.get(text_column) or "").strip()
        if not text:
            raise ConfigError(f"Expected a non-empty `{text_column}` in every row, but {where} has none.")
        value = row.get(label_column)
        label = "" if value is None else str(value).strip()  # not `or ""`: a JSON label 0 is a label
        if not label:
            raise ConfigError(f"Expected a non-empty `{label_column}` in every row, but {where} has none.")
        rows.append((text, label, where))
    return rows


def rare_classes(rows: Rows, classes: list[str]) -> list[str]:
    """Classes (every label of ``rows``) with far fewer examples than the others (a tenth of the median count or
    less, or one example): most often a misspelt label that became a class of its own. Each as "'meh' (1 example:
    reviews.csv:14)"."""
    counts: dict[str, list[str]] = {name: [] for name in classes}
    for _, label, where in rows:  # one pass: a large file with many classes is read at every start
        counts[label].append(where)
    sizes = sorted(len(places) for places in counts.values())
    median = sizes[len(sizes) // 2]
    rare = []
    for name, places in counts.items():
        if len(places) == 1 or (median >= 10 and len(places) <= median / 10):
            shown = ", ".join(places[:3]) + (", ..." if len(places) > 3 else "")
            rare.append(f"{name!r} ({len(places)} example{'s' if len(places) > 1 else ''}: {shown})")
    return rare


def _check_columns(path: Path, columns: list[str], text_column: str, label_column: str, where: str = "") -> None:
    for arg, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in columns:
            suggestion = closest(column, columns)
            hint = f" Closest: {', '.join(suggestion)}." if suggestion else ""
            raise ConfigError(
                f"Expected `{arg}` {column!r} to be a column of {path}{where}, but its columns are "
                f"{', '.join(map(repr, columns)) or 'none'}.{hint}"
            )


def _read_folder(folder: Path) -> Rows:
    rows = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for file in sorted(class_dir.glob("*.txt")):
            text = file.read_text(encoding="utf-8").strip()
            if not text:
                raise ConfigError(f"Expected text in every .txt file, but {file} is empty.")
            rows.append((text, class_dir.name, str(file)))
    if not rows:
        raise ConfigError(f"Expected one sub-folder of .txt files per class in {folder}, but found no .txt file.")
    return rows


class TextFileDataModule(TextDataModule):
    """Labelled texts from files: CSV, TSV or JSON Lines with a text and a label column, or a folder holding one
    sub-folder of ``.txt`` files per class (the folder name is the label).

    Args:
        train: the training file or folder.
        val: a validation file or folder; default: held out of ``train`` (``val_fraction``).
        test: a test file or folder; default: held out of ``train`` (``test_fraction``).
        text_column: the column (or JSON key) holding the text.
        label_column: the column (or JSON key) holding the label.
        classes: the class names in label order; default: the labels found in ``train``, sorted. A label outside
            them is an error naming the file and line.

    The other arguments are `TextDataModule`'s.

    Examples:
        >>> dm = TextFileDataModule("reviews/train.csv", text_column="review", label_column="sentiment")
    """

    def __init__(
        self,
        train: str,
        *,
        val: str | None = None,
        test: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        classes: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        hp = self.hparams
        read = {
            name: read_rows(Path(path).expanduser(), hp.text_column, hp.label_column)
            for name, path in (("train", hp.train), ("val", hp.val), ("test", hp.test))
            if path is not None
        }
        classes = list(hp.classes) if hp.classes else sorted({label for _, label, _ in read["train"]})
        rare = rare_classes(read["train"], classes) if not hp.classes else []
        if rare:
            rank_zero_warn(
                f"{hp.train} has classes with far fewer examples than the others: {'; '.join(rare)}. A misspelt "
                "label becomes a class of its own: list the classes in `classes` to make such a label an error."
            )
        index = {name: i for i, name in enumerate(classes)}
        splits = {}
        for name, rows in read.items():
            for _, label, where in rows:
                if label not in index:
                    raise ConfigError(
                        f"Expected every label to be one of the classes ({', '.join(classes)}), but {where} has "
                        f"{label!r}. List every class in `classes`, or fix the label."
                    )
            splits[name] = Split([text for text, _, _ in rows], [index[label] for _, label, _ in rows])
        return classes, splits
