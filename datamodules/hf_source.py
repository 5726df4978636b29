"""Datasets of the Hugging Face `datasets` library as a tlkit data source: a Hub name or a local copy opened, its
splits mapped to tlkit's, its columns checked, and its targets read as the task needs them.

A dataset is opened from, in this order: a folder written by ``save_to_disk``; a data file (``.parquet``,
``.arrow``, ``.csv``, ``.json``/``.jsonl``) or ``data_files`` for a packaged builder (``parquet``, ``imagefolder``,
...); a Hub name (``beans``, ``user/private-set``) with a config ``name`` and a ``revision``. Each problem is one line
naming the dataset, the split or the column, and what would be valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.datamodules.tables import Record, TargetColumns, check_columns
from tlkit.errors import ConfigError, config_error, import_optional

if TYPE_CHECKING:
    import datasets

#: Where a tlkit split is found when ``splits`` does not say: the first of these the dataset has.
SPLIT_NAMES = {
    "train": ("train",),
    "val": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
#: A data file's builder by its suffix (``load_dataset(<builder>, data_files=...)``).
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def import_datasets():
    """The `datasets` package, or a one-line error naming the extra that installs it."""
    return import_optional("datasets", "for a Hugging Face dataset", "datasets")


@dataclass(frozen=True)
class HubSource:
    """Where a dataset comes from and which of its splits tlkit uses (the datamodule arguments of the same names).

    Attributes:
        path: a Hub name, a ``save_to_disk`` folder, a data file, or a packaged builder (``parquet``, ``imagefolder``)
            with ``data_files``.
        name: the dataset's configuration (Hub datasets with several), or None.
        revision: a Hub branch, tag or commit (pin one for a reproducible run), or None for the default branch.
        data_files: files for a packaged builder: one pattern, a list, or a mapping of split name to file(s).
        splits: tlkit split (``train``, ``val``, ``test``) -> the dataset's split name, or None to hold it out of
            ``train``; a tlkit split not named is found by its usual names (``validation``, ``dev``, ...).
    """

    path: str
    name: str | None = None
    revision: str | None = None
    data_files: Any = None
    splits: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.splits:
            if key not in SPLIT_NAMES:
                raise config_error("splits", f"keyed by tlkit splits ({', '.join(SPLIT_NAMES)})", key)

    def describe(self) -> str:
        """The dataset as errors name it: ``'beans'`` or ``'beans' (config 'x', revision 'v1')``."""
        extra = [f"config {self.name!r}" if self.name else "", f"revision {self.revision!r}" if self.revision else ""]
        extra = [part for part in extra if part]
        return repr(self.path) + (f" ({', '.join(extra)})" if extra else "")

    # --------------------------------------------------------------------------------------------- opening
    def open(self) -> dict[str, datasets.Dataset]:
        """Every split of the dataset, by the dataset's own split names."""
        datasets = import_datasets()
        local = Path(self.path).expanduser()
        if _looks_local(self.path) and not local.exists():  # not a Hub name: say so now, not after Hub retries
            raise ConfigError(
                f"Expected `path` {self.path!r} to be a dataset folder or file, but {str(local)!r} does not exist."
            )
        try:
            if local.is_dir() and _saved_to_disk(local):
                opened = datasets.load_from_disk(str(local))
            elif local.is_file():
                builder = FILE_BUILDERS.get(local.suffix.lower())
                if builder is None:
                    raise config_error("path", f"a file ending in {', '.join(FILE_BUILDERS)}", self.path)
                opened = datasets.load_dataset(builder, data_files={"train": str(local)})
            else:
                opened = datasets.load_dataset(self.path, self.name, revision=self.revision, data_files=self.data_files)
        except ConfigError:
            raise
        except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"Expected `path` {self.describe()} to be a Hugging Face dataset (a Hub name, a save_to_disk folder, "
                f"a data file, or a builder with `data_files`), but datasets could not open it: {first}"
            ) from None
        if isinstance(opened, datasets.Dataset):  # a single saved split
            return {"train": opened}
        return dict(opened)

    def pick_splits(self, available: dict[str, datasets.Dataset]) -> dict[str, str]:
        """tlkit split -> the dataset's split name, for each split the dataset provides (``train`` always)."""
        names = list(available)
        chosen: dict[str, str] = {}
        for split, usual in SPLIT_NAMES.items():
            if split in self.splits:
                wanted = self.splits[split]
                if wanted is None:
                    if split == "train":
                        raise config_error("splits.train", "one of the dataset's splits", None, options=names)
                    continue
                if wanted not in available:
                    raise ConfigError(
                        f"Expected `splits.{split}` {wanted!r} to be a split of {self.describe()}, but its splits are "
                        f"{', '.join(map(repr, names))}."
                    )
                chosen[split] = wanted
            else:
                found = next((name for name in usual if name in available), None)
                if found is not None:
                    chosen[split] = found
        if "train" not in chosen:
            raise ConfigError(
                f"Expected {self.describe()} to have a 'train' split, but its splits are "
                f"{', '.join(map(repr, names))}: name the training one in `splits: {{train: <split>}}`."
            )
        return chosen

    def record(self, split_names: dict[str, str], tables: dict[str, datasets.Dataset]) -> dict[str, Any]:
        """What a checkpoint records of the data: where it came from, which splits were used, and each one's Arrow
        fingerprint (it changes whenever the split's data does)."""
        return {
            "source": "huggingface",
            "path": self.path,
            "name": self.name,
            "revision": self.revision,
            "splits": split_names,
            "fingerprints": {split: table._fingerprint for split, table in tables.items()},
        }


def _looks_local(path: str) -> bool:
    """A path no Hub name could be: absolute, home- or dot-relative, with a file suffix, or more than ``user/name``."""
    return path.startswith(("/", "~", ".")) or Path(path).suffix.lower() in FILE_BUILDERS or path.count("/") > 1


def _saved_to_disk(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


# ------------------------------------------------------------------------------------------------ columns
def check_column(table: datasets.Dataset, column: str, argument: str, where: str) -> None:
    """A column the configuration names must be one of the split's; the error lists them and the closest."""
    check_columns(where, list(table.column_names), {argument: column})


def _class_names(feature: Any) -> list[str] | None:
    """A ClassLabel's names, else None."""
    datasets = import_datasets()
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _item_feature(feature: Any) -> Any | None:
    """What a list feature holds (``List(ClassLabel(...))``), else None."""
    datasets = import_datasets()
    return feature.feature if isinstance(feature, (datasets.List, datasets.LargeList)) else None


def _is_integer(feature: Any) -> bool:
    datasets = import_datasets()
    return isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))


def _is_number(feature: Any) -> bool:
    datasets = import_datasets()
    if not isinstance(feature, datasets.Value):
        return False
    return feature.dtype.startswith(("int", "uint", "float")) or feature.dtype in ("bool", "double", "halffloat")


@dataclass(frozen=True)
class HubTargets:
    """The targets of a dataset's splits read as a table's (`TargetColumns`), so they are checked and indexed the same
    way: class names from a ``ClassLabel`` feature (in its order), label sets from a list of ``ClassLabel`` or of
    strings, numbers from numeric columns."""

    columns: TargetColumns

    def read(self, tables: dict[str, datasets.Dataset], where: dict[str, str]) -> tuple[list[str], dict[str, list]]:
        """(output names, each split's targets in row order). ``where`` names each split in errors."""
        for split, table in tables.items():
            for argument, column in self.columns.columns().items():
                check_column(table, column, argument, where[split])
        columns = self.columns
        if columns.kind == "values":
            for split, table in tables.items():
                for column in columns.target_columns or ():
                    if not _is_number(table.features[column]):
                        raise ConfigError(
                            f"Expected target column {column!r} of {where[split]} to hold numbers, but its feature is "
                            f"{table.features[column]}."
                        )
            records = {
                split: _records(table, columns.target_columns or (), where[split]) for split, table in tables.items()
            }
            return columns.read(records)
        label = columns.label_column
        train_feature = tables["train"].features[label]
        names = self._names(train_feature, where["train"])
        if names is not None and columns.classes and list(columns.classes) != names:
            raise ConfigError(
                f"Expected `classes` to be unset or the names of {where['train']}'s {label!r} ({', '.join(names)}), "
                f"but got {', '.join(columns.classes)}: the dataset's class feature fixes their order."
            )
        records = {}
        for split, table in tables.items():
            feature = table.features[label]
            split_names = self._names(feature, where[split])
            if split_names is not None and names is not None and split_names != names:
                raise ConfigError(
                    f"Expected {where[split]}'s {label!r} to have the classes of {where['train']} "
                    f"({', '.join(names)}), but it has {', '.join(split_names)}."
                )
            if split_names is None and columns.classes and _is_integer(feature):  # number i is classes[i]
                split_names = list(columns.classes)
            records[split] = _label_records(table, label, split_names, where[split])
        if names is not None:
            columns = TargetColumns(label, columns.multi_label, columns.label_separator, None, tuple(names))
        elif columns.classes is None and not columns.multi_label and _is_number(train_feature):
            raise ConfigError(
                f"Expected `label_column` {label!r} of {where['train']} to be a class feature (ClassLabel) or class "
                f"names, but it holds numbers ({train_feature}): list the class names in `classes` (number i is "
                "classes[i]), or for regression set `target_columns`."
            )
        return columns.read(records)

    def _names(self, feature: Any, where: str) -> list[str] | None:
        """The class names a label feature carries (a ClassLabel, or a list of them), else None; a label set where one
        class is expected, or one class where a set is, is an error."""
        label = self.columns.label_column
        inner = _item_feature(feature)
        if self.columns.multi_label:
            if inner is None and not isinstance(feature, import_datasets().Value):
                raise ConfigError(
                    f"Expected `label_column` {label!r} of {where} to hold label sets (a list feature), but it is "
                    f"{feature}."
                )
            return _class_names(inner) if inner is not None else None
        if inner is not None:
            raise ConfigError(
                f"Expected `label_column` {label!r} of {where} to hold one class per row, but it holds lists "
                f"({feature}): set `multi_label: true` (task MultiLabel)."
            )
        return _class_names(feature)


def _records(table: datasets.Dataset, columns: tuple[str, ...] | list[str], where: str) -> list[Record]:
    """Rows of ``columns`` as table records, each with its place (``'beans' split 'train' row 12``)."""
    values = {column: list(table[column]) for column in columns}
    return [({c: values[c][i] for c in columns}, f"{where} row {i}") for i in range(len(table))]


def _label_records(table: datasets.Dataset, label: str, names: list[str] | None, where: str) -> list[Record]:
    """Rows of the label column, class indices turned into their names (-1, a ClassLabel's "no label", is an error)."""
    records = _records(table, [label], where)
    if names is None:
        return records
    for row, place in records:
        value = row[label]
        indices = value if isinstance(value, list) else [value]
        for index in indices:
            if index is None or not 0 <= int(index) < len(names):
                raise ConfigError(
                    f"Expected a class of {label!r} ({', '.join(names)}) in every row, but {place} has {index!r} "
                    "(a ClassLabel's -1 means no label): give this split labels, or leave it out with "
                    "`splits: {<split>: null}`."
                )
        row[label] = [names[int(i)] for i in indices] if isinstance(value, list) else names[int(value)]
    return records


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class HubRow:
    """One sample of a dataset split: the split's name, its Arrow fingerprint and the row's index."""

    split: str
    table_fingerprint: str
    row: int

    def __str__(self) -> str:
        return f"{self.split}/{self.row}"

    def fingerprint(self) -> bytes:
        """What the feature cache keys this sample by: it changes with the split's data."""
        return f"{self.table_fingerprint}:{self.row}".encode()


@dataclass(frozen=True)
class HubSplits:
    """A dataset's splits as tlkit uses them.

    Attributes:
        classes: the output names (class or label names, or the target columns).
        tables: tlkit split -> the dataset's split, all columns.
        split_names: tlkit split -> the dataset's name for it.
        targets: tlkit split -> each row's target (class index, multi-hot vector or numbers).
        record: what a checkpoint records of the data (`HubSource.record`).
    """

    classes: list[str]
    tables: dict[str, Any]
    split_names: dict[str, str]
    targets: dict[str, list[Any]]
    record: dict[str, Any]

    def rows(self, split: str) -> list[HubRow]:
        table = self.tables[split]
        return [HubRow(self.split_names[split], table._fingerprint, i) for i in range(len(table))]


def read_hub(source: HubSource, targets: TargetColumns, sample_column: str, sample_argument: str) -> HubSplits:
    """Open ``source``, pick its splits, check ``sample_column`` (named by ``sample_argument``) and read the targets."""
    available = source.open()
    split_names = source.pick_splits(available)
    tables = {split: available[name] for split, name in split_names.items()}
    where = {split: f"{source.describe()} split {name!r}" for split, name in split_names.items()}
    for split, table in tables.items():
        check_column(table, sample_column, sample_argument, where[split])
        if len(table) == 0:
            raise ConfigError(f"Expected rows in {where[split]}, but it has none.")
    classes, read = HubTargets(targets).read(tables, where)
    return HubSplits(classes, tables, split_names, read, source.record(split_names, tables))
