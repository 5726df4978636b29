"""What tlkit's commands and callbacks may ask of a datamodule, as typed protocols instead of attribute probing."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class NamedClasses(Protocol):
    """A datamodule that knows its class names in label order (checked against a checkpoint's)."""

    def class_names(self) -> list[str]: ...


@runtime_checkable
class NamedPredictSamples(Protocol):
    """A datamodule that can name the samples of its predict loader (written beside each prediction)."""

    def predict_sample_names(self) -> list[str]: ...
