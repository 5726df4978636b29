"""``model.json``: what an export folder says about its model, as one typed record (`ModelSpec`): all a deployment
needs besides the model file, and what a server or another tool reads back (`read_model_spec`)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlkit.errors import ConfigError

SPEC_FILE = "model.json"
#: 1: the first format (its fields below; ``class_ids`` and the verification's relative differences and criterion
#: were added without a new number, as optional fields a reader of format 1 may lack).
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """The contents of ``model.json``.

    Attributes:
        format_version: `FORMAT_VERSION` of the writer.
        files: each exported format's file name (``onnx``: ``model.onnx``).
        input: the input's name, shape and dtype (``images``, ``[batch, 3, crop, crop]``, float32).
        output: the output's name and shape (the task's: ``probabilities``, ``values``, ``locations``).
        preprocessing: the recipe from an image file to the input (`tlkit.engines.preprocessing.preprocessing_spec`).
        class_names: the outputs' names in order: classes, labels, or regression targets.
        class_ids: the ids the user's file gave the classes, in the same order (a COCO file's category ids), or None.
        temperature: applied inside the exported model (its output is already calibrated); 1 without temperature
            scaling.
        task: what the outputs are, and the task's fitted state: a multi-label model's decision thresholds (applied
            by the caller), a regression's target mean and std (applied inside the model), a detector's score and
            NMS thresholds and detection limit (applied by the caller to the locations the model returns).
        strategy: the strategy's class path.
        backbone: the backbone's name.
        verification: the images verified on, each format's largest absolute and relative differences, and the
            criterion the task judged them by.
        versions: tlkit's, torch's and Python's.
    """

    format_version: int
    files: dict[str, str]
    input: dict[str, Any]
    output: dict[str, Any]
    preprocessing: dict[str, Any]
    class_names: list[str]
    class_ids: list[int] | None
    temperature: float
    task: dict[str, Any]
    strategy: str
    backbone: str
    verification: dict[str, Any]
    versions: dict[str, str]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def read_model_spec(folder: str | os.PathLike) -> ModelSpec:
    """An export folder's ``model.json``; one line naming the file when it is missing, of a newer format, or not one."""
    path = Path(folder).expanduser() / SPEC_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"Expected {str(path)!r} to be the model.json of a tlkit export, but it is not ({err})."
        ) from None
    version = saved.get("format_version") if isinstance(saved, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConfigError(
            f"Expected {str(path)!r} to have a model.json format up to {FORMAT_VERSION}, but got {version!r}: it was "
            "written by a newer tlkit; upgrade tlkit to read it."
        )
    fields = {f.name: f for f in dataclasses.fields(ModelSpec)}
    missing = [name for name in fields if name not in saved and name != "class_ids"]
    if missing:
        raise ConfigError(f"Expected {str(path)!r} to hold {', '.join(missing)}, but it does not.")
    return ModelSpec(**{name: saved.get(name) for name in fields})
