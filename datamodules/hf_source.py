"""Datasets of the Hugging Face `datasets` library as a tlkit data source: a Hub name or a local copy opened, its
splits mapped to tlkit's, its columns checked, and its targets read as the task needs them.

A dataset is opened from, in this order: a folder written by ``save_to_disk``; a data file (``.parquet``,
``.arrow``, ``.csv``, ``.json``/``.jsonl``) or ``data_files`` for a packaged builder (``parquet``, ``imagefolder``,
...); a Hub name (``beans``, ``user/private-set``) with a config ``name`` and a ``revision``. Each problem is one line
naming the dataset, the split or the column, and what would be valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
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

    def describe_split(self, name: str) -> str:
        """One of the dataset's splits as errors name it: ``'beans' split 'validation'``."""
        return f"{self.describe()} split {name!r}"

    # --------------------------------------------------------------------------------------------- opening
    def open(self, streaming: bool = False, columns: list[str] | None = None) -> dict[str, Any]:
        """Every split of the dataset, by the dataset's own split names: ``Dataset``s, or with ``streaming``
        ``IterableDataset``s that read rows as they are iterated (only ``columns``, where given: a Parquet source
        reads no other column's bytes)."""
        datasets = import_datasets()
        local = Path(self.path).expanduser()
        if _looks_local(self.path) and not local.exists():  # not a Hub name: say so now, not after Hub retries
            raise ConfigError(
                f"Expected `path` {self.path!r} to be a dataset folder or file, but {str(local)!r} does not exist."
            )
        try:
            if local.is_dir() and _saved_to_disk(local):
                opened = datasets.load_from_disk(str(local))
                if isinstance(opened, datasets.Dataset):  # a single saved split
                    opened = {"train": opened}
                opened = {split: _as_stream(table, columns) if streaming else table for split, table in opened.items()}
            elif local.is_file():
                builder = FILE_BUILDERS.get(local.suffix.lower())
                if builder is None:
                    raise config_error("path", f"a file ending in {', '.join(FILE_BUILDERS)}", self.path)
                opened = _load(datasets, streaming, columns, builder, data_files={"train": str(local)})
            else:
                opened = _load(
                    datasets,
                    streaming,
                    columns,
                    self.path,
                    self.name,
                    revision=self.revision,
                    data_files=self.data_files,
                )
        except ConfigError:
            raise
        except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"Expected `path` {self.describe()} to be a Hugging Face dataset (a Hub name, a save_to_disk folder, "
                f"a data file, or a builder with `data_files`), but datasets could not open it: {first}"
            ) from None
        if isinstance(opened, (datasets.Dataset, datasets.IterableDataset)):  # a single split
            opened = {"train": opened}
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

    def record(self, split_names: dict[str, str], tables: dict[str, Any], rows: dict[str, int]) -> dict[str, Any]:
        """What a checkpoint records of the data: where it came from, which splits were used, their rows, and each
        downloaded split's Arrow fingerprint (it changes whenever the split's data does; a stream has none: pin a
        ``revision``)."""
        downloaded = import_datasets().Dataset
        return {
            "source": "huggingface",
            "path": self.path,
            "name": self.name,
            "revision": self.revision,
            "splits": split_names,
            "rows": rows,
            "fingerprints": {
                split: table._fingerprint if isinstance(table, downloaded) else None for split, table in tables.items()
            },
        }


def _load(datasets: Any, streaming: bool, columns: list[str] | None, *args: Any, **kwargs: Any) -> Any:
    """``load_dataset``, streamed where asked; reading only ``columns`` where the builder can (Parquet), else all of
    them (the caller selects)."""
    if not streaming:
        return datasets.load_dataset(*args, **kwargs)
    if columns is not None:
        try:
            return datasets.load_dataset(*args, streaming=True, columns=columns, **kwargs)
        except (TypeError, ValueError):  # a builder without `columns` (CSV, JSON, imagefolder): read whole rows
            pass
    return datasets.load_dataset(*args, streaming=True, **kwargs)


def _as_stream(table: Any, columns: list[str] | None) -> Any:
    """A downloaded split read as a stream: in 64 contiguous shards (fewer for a small split), so that shuffling
    reorders shards as well as rows in its buffer, as it does a Hub dataset's files."""
    if columns is not None:
        table = table.select_columns(columns)
    return table.to_iterable_dataset(num_shards=max(1, min(64, len(table))))


def _looks_local(path: str) -> bool:
    """A path no Hub name could be: absolute, home- or dot-relative, with a file suffix, or more than ``user/name``."""
    return path.startswith(("/", "~", ".")) or Path(path).suffix.lower() in FILE_BUILDERS or path.count("/") > 1


def _saved_to_disk(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


# ------------------------------------------------------------------------------------------------ columns
def check_column(table: datasets.Dataset, column: str, argument: str, where: str) -> None:
    """A column the configuration names must be one of the split's; the error lists them and the closest."""
    check_columns(where, list(table.column_names), {argument: column})


def check_media_feature(feature: Any, media: type, argument: str, column: str, what: str, where: str) -> None:
    """A column a sample is read from must be a ``media`` feature (``datasets.Image``, ``datasets.Audio``) or paths or
    bytes of such files; anything else is one line naming it (``what``: "images", "audio")."""
    datasets = import_datasets()
    stored = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "binary")
    if not (isinstance(feature, media) or stored):
        raise ConfigError(
            f"Expected `{argument}` {column!r} of {where} to hold {what} (an {media.__name__} feature, file paths or "
            f"file bytes), but its feature is {feature}."
        )


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

    def read(
        self, tables: dict[str, datasets.Dataset], where: dict[str, str]
    ) -> tuple[list[str], dict[str, list], RowTargets]:
        """(output names, each split's targets in row order, how one row's target is read). ``where`` names each
        split in errors."""
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
            return (*columns.read(records), RowTargets(columns, None))
        label = columns.label_column
        train_feature = tables["train"].features[label]
        names = self._names(train_feature, where["train"])
        if names is not None and columns.classes and list(columns.classes) != names:
            raise ConfigError(
                f"Expected `classes` to be unset or the names of {where['train']}'s {label!r} ({', '.join(names)}), "
                f"but got {', '.join(columns.classes)}: the dataset's class feature fixes their order."
            )
        records = {}
        stored_names = names
        for split, table in tables.items():
            feature = table.features[label]
            split_names = self._names(feature, where[split])
            if split_names is not None and names is not None and split_names != names:
                raise ConfigError(
                    f"Expected {where[split]}'s {label!r} to have the classes of {where['train']} "
                    f"({', '.join(names)}), but it has {', '.join(split_names)}."
                )
            if split_names is None and columns.classes and _is_integer(feature):  # number i is classes[i]
                split_names = stored_names = list(columns.classes)
            records[split] = _label_records(table, label, split_names, where[split])
        if names is not None:
            columns = TargetColumns(label, columns.multi_label, columns.label_separator, None, tuple(names))
        elif columns.classes is None and not columns.multi_label and _is_number(train_feature):
            raise ConfigError(
                f"Expected `label_column` {label!r} of {where['train']} to be a class feature (ClassLabel) or class "
                f"names, but it holds numbers ({train_feature}): list the class names in `classes` (number i is "
                "classes[i]), or for regression set `target_columns`."
            )
        outputs, targets = columns.read(records)
        named = TargetColumns(label, columns.multi_label, columns.label_separator, None, tuple(outputs))
        return outputs, targets, RowTargets(named, stored_names)

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
    if names is not None:
        for row, place in records:
            row[label] = _named(row[label], names, label, place)
    return records


def _named(value: Any, names: list[str], label: str, where: str) -> Any:
    """A stored class index (or a list of them) as its class name(s)."""
    indices = value if isinstance(value, list) else [value]
    for index in indices:
        if index is None or not 0 <= int(index) < len(names):
            raise ConfigError(
                f"Expected a class of {label!r} ({', '.join(names)}) in every row, but {where} has {index!r} "
                "(a ClassLabel's -1 means no label): give this split labels, or leave it out with "
                "`splits: {<split>: null}`."
            )
    return [names[int(i)] for i in indices] if isinstance(value, list) else names[int(value)]


@dataclass(frozen=True)
class RowTargets:
    """One row's target read from the row itself, as `HubTargets.read` reads a whole split: for rows that arrive
    one at a time in no known order (a streamed, shuffled split).

    Attributes:
        columns: the target columns (with the output names in ``classes`` for labels).
        stored_names: what a stored integer label means (a ClassLabel's names; ``classes`` when integer i means
            classes[i]), or None where labels are stored as names.
    """

    columns: TargetColumns
    stored_names: list[str] | None

    @cached_property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.columns.classes or ())}

    def __call__(self, row: dict[str, Any], where: str) -> Any:
        columns = self.columns
        if columns.kind == "values":
            return columns.values(row, where)
        value = row.get(columns.label_column)
        if self.stored_names is not None and value is not None:
            value = _named(value, self.stored_names, columns.label_column, where)
        labels = columns.raw_labels({columns.label_column: value}, where)
        return columns.encode(labels, self.index, where)


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
        tables: tlkit split -> the dataset's split, all columns (an ``IterableDataset`` where streamed).
        split_names: tlkit split -> the dataset's name for it.
        targets: tlkit split -> each row's target (class index, multi-hot vector or numbers).
        record: what a checkpoint records of the data (`HubSource.record`).
        row_targets: how one row's target is read from the row (for streamed rows, which come in no known order).
    """

    classes: list[str]
    tables: dict[str, Any]
    split_names: dict[str, str]
    targets: dict[str, list[Any]]
    record: dict[str, Any]
    row_targets: RowTargets

    def rows(self, split: str) -> list[HubRow]:
        """Each row of the split by its place; a stream's rows are stamped with the dataset's path and revision."""
        stamp = self.record["fingerprints"][split] or f"{self.record['path']}@{self.record['revision']}"
        return [HubRow(self.split_names[split], stamp, i) for i in range(len(self.targets[split]))]


def read_hub(
    source: HubSource, targets: TargetColumns, sample_column: str, sample_argument: str, streaming: bool = False
) -> HubSplits:
    """Open ``source``, pick its splits, check ``sample_column`` (named by ``sample_argument``) and read the targets.

    With ``streaming`` the splits are ``IterableDataset``s and nothing is downloaded whole: the targets are read in
    one pass over the target columns alone (a Parquet source reads no image bytes for it), which also counts each
    split's rows."""
    available = source.open(streaming)
    split_names = source.pick_splits(available)
    tables = {split: available[name] for split, name in split_names.items()}
    where = {split: source.describe_split(name) for split, name in split_names.items()}
    for split, table in tables.items():
        if streaming:
            tables[split] = table = _with_features(table, where[split])
        check_column(table, sample_column, sample_argument, where[split])
    target_tables = tables
    if streaming:
        columns = list(targets.columns().values())
        for split, table in tables.items():
            for argument, column in targets.columns().items():
                check_column(table, column, argument, where[split])
        target_streams = source.open(streaming, columns)
        target_tables = {
            split: _target_table(target_streams[name], tables[split].features, columns)
            for split, name in split_names.items()
        }
    for split, table in target_tables.items():
        if len(table) == 0:
            raise ConfigError(f"Expected rows in {where[split]}, but it has none.")
    classes, read, row_targets = HubTargets(targets).read(target_tables, where)
    rows = {split: len(values) for split, values in read.items()}
    return HubSplits(classes, tables, split_names, read, source.record(split_names, tables, rows), row_targets)


def _with_features(stream: Any, where: str) -> Any:
    """A stream whose features are known (JSON and CSV streams learn theirs from their first row)."""
    if stream.features is None:
        stream = stream._resolve_features()  # datasets' own way: reads the first row
    if stream.features is None:
        raise ConfigError(f"Expected {where} to have columns, but it has no rows to learn them from.")
    return stream


def _target_table(target_stream: Any, features: Any, columns: list[str]) -> Any:
    """The target columns of a stream, read in one pass, as a small in-memory ``Dataset`` with the stream's
    features: read and checked as a downloaded split's are."""
    datasets = import_datasets()
    if set(target_stream.column_names or ()) != set(columns):
        target_stream = target_stream.select_columns(columns)
    values: dict[str, list] = {column: [] for column in columns}
    for row in target_stream:
        for column in columns:
            values[column].append(row[column])
    return datasets.Dataset.from_dict(values, features=datasets.Features({c: features[c] for c in columns}))
