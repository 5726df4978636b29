"""What tlkit's command and callbacks may ask of a model or datamodule: typed, structural protocols.

They live here, beside neither side, so callbacks need not import strategies or datamodules and nothing probes
another package's attributes by name. Any class with the members below matches, tlkit's own or a user's.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class NamedClasses(Protocol):
    """A datamodule that knows its class names in label order (checked against a checkpoint's)."""

    def class_names(self) -> list[str]: ...


@runtime_checkable
class NamedPredictSamples(Protocol):
    """A datamodule that can name the samples of its predict loader (written beside each prediction)."""

    def predict_sample_names(self) -> list[str]: ...


@runtime_checkable
class DomainValidation(Protocol):
    """A domain-adaptation datamodule: one validation loader per domain, by name (``source``, ``target``)."""

    def domain_val_dataloaders(self) -> dict[str, Any]: ...


@runtime_checkable
class NamedClassifier(Protocol):
    """A model that knows its class names in label order (every `TransferModule`, also from a checkpoint)."""

    class_names: list[str] | None


@runtime_checkable
class FeatureExtractor(Protocol):
    """A model whose backbone features can be read: ``extract_features(images) -> (N, D)``."""

    def extract_features(self, x: Any) -> Any: ...
