"""Tables of samples: CSV, TSV or JSON Lines files read row by row, each row with its place (``file:line``), and
the targets in them read as the task needs: a class label, a set of labels, or numbers.

Every problem is one line naming the file, the line and the column, and what would be valid.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn

from tlkit.errors import ConfigError, closest, config_error
from tlkit.protocols import TargetKind

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
LINES_SUFFIXES = (".jsonl", ".json")
Record = tuple[dict[str, Any], str]  # (row, where: "file:line")


def read_table(path: Path, columns: dict[str, str]) -> list[Record]:
    """Every row of a CSV/TSV/JSON Lines file with its ``file:line``; ``columns`` maps each argument that names a
    column (``text_column``) to the column, and a column missing from the file is an error naming both."""
    if not path.is_file():
        raise ConfigError(f"Expected a table file, but {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        # utf-8-sig: spreadsheets' "CSV UTF-8" starts with a byte-order mark, which would become part of the first
        # column's name; without one it reads as utf-8.
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file, delimiter=TABLE_SUFFIXES[suffix])
            check_columns(path, list(reader.fieldnames or []), columns)
            return [(row, f"{path}:{i + 2}") for i, row in enumerate(reader)]  # line 1 is the header
    if suffix in LINES_SUFFIXES:
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
                check_columns(path, list(row), columns, f" (line {i + 1})")
                records.append((row, f"{path}:{i + 1}"))
        return records
    raise ConfigError(f"Expected a .csv, .tsv or .jsonl file, but got {str(path)!r}.")


def check_columns(source: Path | str, found: list[str], columns: dict[str, str], where: str = "") -> None:
    """Every column ``columns`` names (by the argument that names it) is one of ``found``, the columns of ``source``
    (a file, a dataset's split); the error lists them and the closest."""
    for arg, column in columns.items():
        if column not in found:
            suggestion = closest(column, found)
            hint = f" Closest: {', '.join(suggestion)}." if suggestion else ""
            raise ConfigError(
                f"Expected `{arg}` {column!r} to be a column of {source}{where}, but its columns are "
                f"{', '.join(map(repr, found)) or 'none'}.{hint}"
            )


@dataclass(frozen=True)
class TargetColumns:
    """Where a table keeps its targets and how to read them (the datamodule arguments of the same names).

    Attributes:
        label_column: the column of the class label, or of the label set with ``multi_label``.
        multi_label: the label column holds a set of labels: a JSON list, or names joined by ``label_separator``.
        label_separator: what joins the labels of a set written as one string.
        target_columns: numeric columns, one regression target each; when set, labels are not read.
        classes: the class or label names in output order; default: every one found in the training table, sorted.
    """

    label_column: str = "label"
    multi_label: bool = False
    label_separator: str = ";"
    target_columns: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.target_columns is not None and not self.target_columns:
            raise config_error("target_columns", "one column name or more, or null", [])
        if self.target_columns is not None and self.multi_label:
            raise config_error("multi_label", "false with `target_columns` (numbers, not labels)", True)
        if not self.label_separator:
            raise config_error("label_separator", "a non-empty string", self.label_separator)

    @classmethod
    def from_arguments(
        cls,
        label_column: str,
        multi_label: bool,
        label_separator: str,
        target_columns: list[str] | None,
        classes: list[str] | None,
    ) -> TargetColumns:
        """From a datamodule's arguments of the same names (lists as a config gives them)."""
        columns = tuple(target_columns) if target_columns is not None else None
        return cls(label_column, multi_label, label_separator, columns, tuple(classes) if classes else None)

    @property
    def kind(self) -> TargetKind:
        if self.target_columns is not None:
            return "values"
        return "labels" if self.multi_label else "class"

    def columns(self) -> dict[str, str]:
        """The columns every row must have, by the argument that names them."""
        if self.target_columns is not None:
            return {f"target_columns[{i}]": column for i, column in enumerate(self.target_columns)}
        return {"label_column": self.label_column}

    # ------------------------------------------------------------------------------------------- reading rows
    def raw_labels(self, row: dict[str, Any], where: str) -> list[str]:
        """The label(s) of one row as written (one for a class)."""
        value = row.get(self.label_column)
        if self.multi_label:
            if isinstance(value, list):
                labels = [str(v).strip() for v in value]
            else:
                text = "" if value is None else str(value)
                labels = [part.strip() for part in text.split(self.label_separator)]
            labels = [label for label in labels if label]
            if not labels:
                raise ConfigError(
                    f"Expected at least one label in `{self.label_column}` of every row, but {where} has none "
                    f"(labels are a JSON list or joined by {self.label_separator!r})."
                )
            return labels
        label = "" if value is None else str(value).strip()  # not `or ""`: a JSON label 0 is a label
        if not label:
            raise ConfigError(f"Expected a non-empty `{self.label_column}` in every row, but {where} has none.")
        return [label]

    def values(self, row: dict[str, Any], where: str) -> np.ndarray:
        """The numeric targets of one row; missing, non-numeric, NaN or infinite ones are errors naming them."""
        values = []
        for column in self.target_columns or ():
            raw = row.get(column)
            try:
                value = float(raw) if raw is not None and str(raw).strip() != "" else None
            except (TypeError, ValueError):
                raise ConfigError(
                    f"Expected a number in target column {column!r} of every row, but {where} has {raw!r}."
                ) from None
            if value is None:
                raise ConfigError(f"Expected a number in target column {column!r} of every row, but {where} has none.")
            if not math.isfinite(value):
                raise ConfigError(
                    f"Expected a finite number in target column {column!r} of every row, but {where} has {raw!r}."
                )
            values.append(value)
        return np.asarray(values, dtype=np.float32)

    def read(self, tables: dict[str, list[Record]]) -> tuple[list[str], dict[str, list[Any]]]:
        """(output names, each table's targets in row order): class indices, multi-hot vectors or numbers."""
        if self.kind == "values":
            names = list(self.target_columns or ())
            return names, {name: [self.values(row, where) for row, where in rows] for name, rows in tables.items()}
        raw = {name: [(self.raw_labels(row, where), where) for row, where in rows] for name, rows in tables.items()}
        names = list(self.classes) if self.classes else sorted({lab for labels, _ in raw["train"] for lab in labels})
        if not self.classes:  # every name found became an output: say which look like typing slips
            rare = rare_names(raw["train"], names)
            if rare:
                word = "labels" if self.multi_label else "classes"
                rank_zero_warn(
                    f"The training table has {word} with far fewer examples than the others: {'; '.join(rare)}. A "
                    f"misspelt label becomes a {'label' if self.multi_label else 'class'} of its own: list the {word} "
                    "in `classes` to make such a label an error."
                )
        index = {name: i for i, name in enumerate(names)}
        targets = {table: [self.encode(labels, index, where) for labels, where in rows] for table, rows in raw.items()}
        return names, targets

    def encode(self, labels: list[str], index: dict[str, int], where: str) -> Any:
        """One row's labels (`raw_labels`) as its target: the class index, or a multi-hot vector over ``index``
        (name -> output); a label not in ``index`` is an error naming the row."""
        for label in labels:
            if label not in index:
                raise ConfigError(
                    f"Expected every label to be one of the classes ({', '.join(index)}), but {where} has "
                    f"{label!r}. List every class in `classes`, or fix the label."
                )
        if not self.multi_label:
            return index[labels[0]]
        vector = np.zeros(len(index), dtype=np.float32)
        vector[[index[label] for label in labels]] = 1.0
        return vector


def rare_names(rows: list[tuple[list[str], str]], names: list[str]) -> list[str]:
    """Class or label names with far fewer examples than the others (a tenth of the median count or less, or one
    example): most often a misspelt label that became an output of its own. ``rows`` are each row's labels as written
    and where the row is; each name as "'kat' (1 example: pets.csv:14)"."""
    found: dict[str, list[str]] = {name: [] for name in names}
    for labels, where in rows:  # one pass: a large file with many classes is read at every start
        for label in labels:
            found[label].append(where)
    sizes = sorted(len(places) for places in found.values())
    median = sizes[len(sizes) // 2]
    rare = []
    for name, places in found.items():
        if len(places) == 1 or (median >= 10 and len(places) <= median / 10):
            shown = ", ".join(places[:3]) + (", ..." if len(places) > 3 else "")
            rare.append(f"{name!r} ({len(places)} example{'s' if len(places) > 1 else ''}: {shown})")
    return rare


# ------------------------------------------------------------------------------------------- tables of files
def read_split_tables(files: dict[str, str | None], columns: dict[str, str]) -> dict[str, list[Record]]:
    """Each split's table (``files``: split -> table path, None where the split has none), every row checked for
    ``columns`` (argument -> column name); an empty table is an error naming it."""
    tables = {name: read_table(Path(path).expanduser(), columns) for name, path in files.items() if path is not None}
    for name, rows in tables.items():
        if not rows:
            raise ConfigError(f"Expected rows in the {name} table {files[name]!r}, but it has none.")
    return tables


def row_file(row: dict[str, Any], column: str, where: str, table: str, what: str) -> Path:
    """The file a row names in ``column`` (relative to its ``table``'s folder, or absolute), which must exist; each
    problem is one line naming the row (``what``: "image", "clip")."""
    value = str(row.get(column) or "").strip()
    if not value:
        raise ConfigError(f"Expected a path in `{column}` of every row, but {where} has none.")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else Path(table).expanduser().parent / path
    if not path.is_file():
        raise ConfigError(f"Expected the {what} {value!r} of {where} to exist, but {str(path)!r} does not.")
    return path
