"""What a tlkit checkpoint carries beside Lightning's keys, as one typed, versioned record; and the one policy for
reading any file a user hands tlkit (checkpoints, weights, cached features): data only, never code.

A checkpoint is Lightning's dict (``state_dict``, ``optimizer_states``, ``loops``, ``hyper_parameters``...) with one
key of tlkit's: ``tlkit``, the `CheckpointInfo` below as plain data. It holds what tlkit knows of the run: the
strategy, the seed, the classes and their ids, the optimizer, the task, the preprocessing, the run's resolved config
as YAML (so ``--ckpt_path`` alone rebuilds the run) and, for a domain-adaptation run, what it measured of its
source-only reference and of each validated epoch (`AdaptationRecord`). It is written in one place
(`TransferModule.on_save_checkpoint`, with `write_info`; strategies add their part by extending
`TransferModule.checkpoint_record`) and read through `info_of`, which migrates every older layout.

Schema versions: 0 is the layout before the schema had a number (the same keys, no ``schema_version``); 1 adds
``schema_version`` and ``task`` (empty); 2 moves the preprocessing to the datamodule's state; 3 fills ``task``; 4 adds
``class_ids``; 5 puts everything under the one key (the run config was ``tlkit_config``, the adaptation record
``tlkit_adaptation``, the preprocessing the datamodule's state ``tlkit_data_config``). A checkpoint of a newer schema
than this tlkit knows is refused in one line.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tlkit.errors import ConfigError, config_error

#: 5: one record under one key (`CheckpointInfo.run_config`, `adaptation` and `data_config` with the rest); 4: the
#: classes' ids in the user's file are recorded (`CheckpointInfo.class_ids`: a COCO file's category ids); 3: the task
#: is recorded (`CheckpointInfo.task`; its fitted state, thresholds or target mean and std, under ``task.`` in the
#: state dict), so a tlkit without tasks refuses a multi-label or regression checkpoint in one line; 2: the
#: preprocessing is recorded by the datamodule (in its own Lightning state); 1: the first numbered schema; 0:
#: checkpoints written before the schema had a number.
SCHEMA_VERSION = 5
INFO_KEY = "tlkit"
#: Where schema 4 and older kept the run config (YAML text), the adaptation record, and (in the datamodule's Lightning
#: state, under its class name) the preprocessing: read by `info_of` from checkpoints of those schemas.
LEGACY_RUN_CONFIG_KEY = "tlkit_config"
LEGACY_ADAPTATION_KEY = "tlkit_adaptation"
LEGACY_DATA_CONFIG_STATE = "tlkit_data_config"


@dataclass(frozen=True)
class AdaptationRecord:
    """What a domain-adaptation run measured: the source-only reference's values (None until measured), each
    validated epoch's values, and the source-only epochs the run trains (None where an older tlkit did not say).
    Plain numbers, read back with ``weights_only=True``."""

    reference: dict[str, float] | None = None
    epochs: tuple[dict[str, float], ...] = ()
    reference_epochs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "epochs": list(self.epochs), "reference_epochs": self.reference_epochs}

    @classmethod
    def from_dict(cls, saved: Any) -> AdaptationRecord | None:
        if not isinstance(saved, dict):
            return None
        plain = lambda row: {k: float(v) for k, v in row.items()}  # noqa: E731
        reference = saved.get("reference")
        epochs = saved.get("reference_epochs")
        return cls(
            plain(reference) if reference else None,
            tuple(plain(row) for row in saved.get("epochs") or []),
            int(epochs) if epochs is not None else None,
        )


@dataclass(frozen=True)
class CheckpointInfo:
    """What tlkit records in every checkpoint of a strategy: the one record, under the one key.

    Args:
        strategy: the strategy's class path (``tlkit.strategies.fine_tuning.FineTuning``).
        seed: the run seed that every step's randomness derives from (exact resume).
        class_names: the classes in head order, or None when the data named none.
        class_ids: the ids the user's file gave the classes, in head order (a COCO file's category ids), or None
            (schema 3 and older, or data without ids): predictions are written with them.
        optimizer: the optimizer's class path (optimizer state only loads into the class that wrote it).
        lr_scheduler: the configured scheduler's class path, or None for the default cosine.
        data_config: the preprocessing the model was trained with (a `DataConfig` as a dict), as the datamodule
            resolved it: what export feeds.
        data_source: where the training data came from, where the datamodule says (a Hugging Face dataset's path,
            config, revision and split fingerprints: `tlkit.protocols.RecordsDataSource`), or None.
        pretrained_fingerprint: set when the checkpoint leaves out the frozen pretrained weights (adapter-only):
            the fingerprint they must have when rebuilt from the run's ``weights``.
        task: what the model predicts and how: the task's name, class path, arguments and fitted state
            (`tlkit.tasks.Task.describe`); None (schema 2 and older) is single-label classification.
        run_config: the run's resolved config as YAML text (written by a run of the `tlkit` command), or None.
        adaptation: a domain-adaptation run's `AdaptationRecord`, or None.
        schema_version: the schema this was written with.
    """

    strategy: str
    seed: int | None = None
    class_names: tuple[str, ...] | None = None
    class_ids: tuple[int, ...] | None = None
    optimizer: str | None = None
    lr_scheduler: str | None = None
    data_config: dict[str, Any] | None = None
    data_source: dict[str, Any] | None = None
    pretrained_fingerprint: str | None = None
    task: dict[str, Any] | None = None
    run_config: str | None = None
    adaptation: AdaptationRecord | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, strings, numbers), which ``torch.load(weights_only=True)`` reads back."""
        saved = dataclasses.asdict(self)
        saved["class_names"] = list(self.class_names) if self.class_names is not None else None
        saved["class_ids"] = list(self.class_ids) if self.class_ids is not None else None
        saved["adaptation"] = self.adaptation.to_dict() if self.adaptation is not None else None
        return saved

    @classmethod
    def from_dict(cls, saved: dict[str, Any], where: str = "the checkpoint") -> CheckpointInfo:
        version = saved.get("schema_version", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ConfigError(
                f"Expected {where} to have a tlkit checkpoint schema up to {SCHEMA_VERSION}, but got {version!r}: "
                "it was written by a newer tlkit; upgrade tlkit to read it."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        for key in ("class_names", "class_ids"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        values["adaptation"] = AdaptationRecord.from_dict(values.get("adaptation"))
        values["schema_version"] = version
        values.setdefault("strategy", "")
        return cls(**values)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file as read: Lightning's dict, tlkit's record (None for a plain Lightning checkpoint) and the
    model's hyperparameters."""

    path: Path
    contents: dict[str, Any]
    info: CheckpointInfo | None
    hyper_parameters: dict[str, Any]

    @property
    def run_config(self) -> str | None:
        return self.info.run_config if self.info is not None else None


# ---------------------------------------------------------------------------------------------------- writing
def write_info(checkpoint: dict[str, Any], info: CheckpointInfo) -> None:
    """Write the record: called once per save, by `TransferModule.on_save_checkpoint`."""
    checkpoint[INFO_KEY] = info.to_dict()


def info_of(checkpoint: dict[str, Any], where: str = "the checkpoint") -> CheckpointInfo | None:
    """The record in a checkpoint dict (any schema version, migrated to this one's fields), or None when tlkit wrote
    none."""
    saved = checkpoint.get(INFO_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict):
        return None
    info = CheckpointInfo.from_dict(saved, where)
    if info.schema_version >= 5:
        return info
    # Schema 4 and older kept parts of the record under keys of their own.
    legacy = {}
    if isinstance(checkpoint.get(LEGACY_RUN_CONFIG_KEY), str):
        legacy["run_config"] = checkpoint[LEGACY_RUN_CONFIG_KEY]
    adaptation = AdaptationRecord.from_dict(checkpoint.get(LEGACY_ADAPTATION_KEY))
    if adaptation is not None:
        legacy["adaptation"] = adaptation
    for value in checkpoint.values():  # the datamodule's state, under its class name (schema 2 to 4)
        if isinstance(value, dict) and isinstance(value.get(LEGACY_DATA_CONFIG_STATE), dict):
            legacy["data_config"] = value[LEGACY_DATA_CONFIG_STATE]
    return dataclasses.replace(info, **legacy)


def adaptation_of(checkpoint: dict[str, Any]) -> AdaptationRecord:
    """The adaptation record of ``checkpoint`` (an empty one where the run kept none)."""
    info = info_of(checkpoint) if isinstance(checkpoint, dict) else None
    return info.adaptation if info is not None and info.adaptation is not None else AdaptationRecord()


# ---------------------------------------------------------------------------------------------------- reading
def load_file(path: str | os.PathLike, option: str, expected: str = "a torch file", mmap: bool = False) -> Any:
    """Read a torch file as data: tensors, containers, numbers and strings; never code.

    ``torch.load(weights_only=True)`` refuses any pickled object that would import and call something (a
    checkpoint someone sent you could otherwise run anything on unpickling); such a file, or one that is not a torch
    file at all, is a one-line `ConfigError` naming ``option`` and the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        problem = "a folder" if path.is_dir() else "no such file"
        raise config_error(option, expected, f"{str(path)} ({problem})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if not any(refusal in str(err) for refusal in CODE_REFUSALS):  # not a pickle: a text file, a truncated one
            raise config_error(option, expected, f"{str(path)} (unreadable: not a torch file)") from err
        raise ConfigError(
            f"Expected `{option}` {str(path)!r} to hold only tensors and plain data, but reading it would run code "
            f"({_refused_global(err)}); tlkit never runs code from a file. Re-save it as a state dict or safetensors."
        ) from err
    except Exception as err:  # noqa: BLE001 (torch raises several types for a file that is no torch file)
        raise config_error(option, expected, f"{str(path)} (unreadable: {type(err).__name__})") from err


#: How torch's weights-only unpickler words a refusal to import or build an object (anything else it reports, such
#: as "Unsupported operand", means the bytes are no pickle at all).
CODE_REFUSALS = ("Unsupported global: GLOBAL ", "Unsupported class ")


def _refused_global(err: Exception) -> str:
    """The name torch's weights-only unpickler refused (``exec``, ``mymodule.MyClass``), from its message."""
    for line in str(err).splitlines():
        for marker in CODE_REFUSALS:
            if marker in line:
                return line[line.index(marker) + len(marker) :].split(" was not")[0].strip()
    return "an object that is not plain data"


#: The functions a checkpoint's hyperparameters may name to build its model (``_instantiator``): LightningCLI's own.
#: Any other would be code the file chose; Lightning refuses them too, with a traceback.
TRUSTED_INSTANTIATORS = ("lightning.pytorch.cli.instantiate_module", "pytorch_lightning.cli.instantiate_module")


def read_checkpoint(path: str | os.PathLike, option: str = "ckpt_path") -> Checkpoint:
    """A checkpoint file, read by `load_file`'s policy (memory-mapped: only the parts used are read); one whose
    hyperparameters name a function to build the model with other than LightningCLI's is refused in one line."""
    contents = load_file(path, option, "a checkpoint written by tlkit or Lightning", mmap=True)
    if not isinstance(contents, dict):
        raise config_error(option, "a checkpoint written by tlkit or Lightning", f"{path} (not a checkpoint)")
    where = f"checkpoint {path}"
    hparams = contents.get("hyper_parameters")
    instantiator = hparams.get("_instantiator") if isinstance(hparams, dict) else None
    if instantiator is not None and instantiator not in TRUSTED_INSTANTIATORS:
        raise ConfigError(
            f"Expected `{option}` {str(path)!r} to build its model with LightningCLI's instantiator, but its "
            f"hyperparameters name {instantiator!r}; tlkit never runs code a file names."
        )
    return Checkpoint(
        Path(path), contents, info_of(contents, where), dict(hparams) if isinstance(hparams, dict) else {}
    )


# ------------------------------------------------------------------------------------------ class paths, checks
def class_path(cls: type) -> str:
    """The dotted path a class imports from: what the schema stores for strategies, optimizers and schedulers."""
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str) -> type | None:
    """The class a dotted ``path`` names (``torch.optim.SGD``), or None if it does not import."""
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return None


#: Hyperparameters a checkpoint's weights only fit when they are the same (the tensors' shapes follow from them).
SHAPE_HYPERPARAMETERS = ("backbone", "head", "num_classes")


def check_same_model(saved: dict[str, Any], ours: dict[str, Any], where: str) -> None:
    """Refuse, naming the option, a model whose backbone, head, number of classes or task differs from a
    checkpoint's (a checkpoint from before tasks existed is a classifier's)."""
    for key in SHAPE_HYPERPARAMETERS:
        if key in saved and ours.get(key) is not None and saved[key] != ours[key]:
            raise config_error(f"model.{key}", f"{saved[key]!r} as in the {where}", ours[key])
    saved_task, our_task = _task_class(saved.get("task")), _task_class(ours.get("task"))
    if our_task is not None and saved_task != our_task:
        raise config_error(
            "model.task", f"{saved_task.rpartition('.')[2]} as in the {where}", our_task.rpartition(".")[2]
        )


def _task_class(task: Any) -> str | None:
    if task is None:
        return "tlkit.tasks.classification.Classification"
    return task.get("class_path") if isinstance(task, dict) else class_path(type(task))


def check_same_classes(saved: tuple[str, ...] | list[str] | None, names: list[str] | None, where: str) -> None:
    """Refuse data whose classes (in head order) differ from those a checkpoint was trained on."""
    if saved is not None and names is not None and list(saved) != list(names):
        raise config_error(
            "the data's classes", f"the {len(saved)} classes of the {where} ({listed(saved)})", listed(names)
        )


def listed(names: tuple[str, ...] | list[str], limit: int = 10) -> str:
    """``"3 classes: cat, dog, fox"``, the first ``limit`` names shown."""
    shown = ", ".join(map(str, names[:limit])) + (", ..." if len(names) > limit else "")
    return f"{len(names)} classes: {shown}"
