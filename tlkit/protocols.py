"""What tlkit's command and callbacks may ask of a model or datamodule: typed, structural protocols.

They live here, beside neither side, so callbacks need not import strategies or datamodules and nothing probes
another package's attributes by name. Any class with the members below matches, tlkit's own or a user's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tlkit.backbones import Backbone
    from tlkit.data_request import DataRequest
    from tlkit.features import FeatureServing

#: What a datamodule's targets are: one class index per sample (``class``), a set of labels (``labels``, served as a
#: multi-hot float vector), numbers (``values``, a float vector), a class per pixel (``masks``, an (H, W) integer
#: tensor), or boxed objects (``boxes``: a dict of ``boxes`` (K, 4) x1, y1, x2, y2 and ``labels`` (K,) per image).
#: A model's task trains on one kind.
TargetKind = Literal["class", "labels", "values", "masks", "boxes"]


@dataclass(frozen=True)
class FeatureMap:
    """One of a backbone's multi-scale feature maps (`Backbone.feature_info`), as dense tasks' decoders read it: its
    channels and its stride (input pixels per map pixel)."""

    channels: int
    stride: int


@runtime_checkable
class DescribesTargets(Protocol):
    """A datamodule that says which kind of targets it serves (one without it serves classes), and can hand over its
    training split's targets (N, outputs) for a task to learn from (a regression's mean, a label's frequency)."""

    @property
    def target_kind(self) -> TargetKind: ...

    def training_targets(self) -> Any: ...


@runtime_checkable
class NamedClasses(Protocol):
    """A datamodule that knows its class names in label order (checked against a checkpoint's)."""

    def class_names(self) -> list[str]: ...


@runtime_checkable
class IdentifiedClasses(Protocol):
    """A datamodule whose classes carry ids of the user's file (a COCO file's category ids, which need not run
    1, 2, 3): predictions are written with them. None where the data has no ids of its own."""

    def class_ids(self) -> list[int] | None: ...


@runtime_checkable
class IdentifiedPredictSamples(Protocol):
    """A datamodule whose predicted samples carry ids of the user's file (a COCO file's image ids); None where they
    have none (images of a predict folder)."""

    def predict_sample_ids(self) -> list[int] | None: ...


@runtime_checkable
class RecordsDataSource(Protocol):
    """A datamodule that says where its data came from for every checkpoint to record (a Hugging Face dataset's
    path, config, revision and split fingerprints); None until it has read its data."""

    def data_source(self) -> dict[str, Any] | None: ...


@runtime_checkable
class StoredMask(Protocol):
    """A segmentation mask kept inside a dataset rather than as a file (a Hugging Face dataset's mask column): its
    (H, W) class-index array."""

    def array(self) -> Any: ...


@runtime_checkable
class Fingerprinted(Protocol):
    """A sample that is neither a file nor an image in memory (a dataset row): the bytes the feature cache keys it
    by, which change whenever the sample does."""

    def fingerprint(self) -> bytes: ...


@runtime_checkable
class CarriesRunConfig(Protocol):
    """A callback that carries the run's resolved config (YAML text) for the model to record in every checkpoint
    (the `tlkit` command adds one to each fit)."""

    run_config: str


@runtime_checkable
class ResolvesDataConfig(Protocol):
    """A datamodule that can say how it preprocesses images for the attached model (it records that in checkpoints)."""

    def resolve_data_config(self) -> Any: ...


@runtime_checkable
class ServesFeatures(Protocol):
    """A datamodule that can serve a frozen backbone's cached features in place of its inputs.

    Whoever keeps the backbone frozen hands the serving in after the datamodule's setup and before the loaders are
    built (`FeatureExtraction` in its setup; `ProgressiveUnfreezing` in its own, for the head-only phase); each
    setup of the datamodule starts with none, serving inputs.
    """

    def serve_features(self, serving: FeatureServing | None) -> None: ...


@runtime_checkable
class CountedClasses(Protocol):
    """A datamodule that knows how many classes it has (a model without ``num_classes`` sizes its head from it)."""

    num_classes: int


@runtime_checkable
class NamedPredictSamples(Protocol):
    """A datamodule that can name the samples of its predict loader (written beside each prediction)."""

    def predict_sample_names(self) -> list[str]: ...


@runtime_checkable
class DomainValidation(Protocol):
    """A domain-adaptation datamodule: one validation loader per domain, by name (``source``, ``target``)."""

    def domain_val_dataloaders(self) -> dict[str, Any]: ...


@runtime_checkable
class DomainData(DomainValidation, Protocol):
    """A domain-adaptation datamodule whose target domain has ``none``, ``few`` or ``all`` of its labels."""

    @property
    def target_labels(self) -> str: ...


@runtime_checkable
class UnlabelledTargetPool(Protocol):
    """A domain-adaptation datamodule that serves its target training pool in order, images only: for strategies
    that label the pool themselves (SHOT's centroid pseudo-labels, indexed as the ``target_indices`` request says)."""

    def target_pool_loader(self) -> Any: ...


@runtime_checkable
class RequestsData(Protocol):
    """A model that tells its datamodule what it needs (every `TransferModule`)."""

    def data_request(self) -> DataRequest: ...


@runtime_checkable
class LayerGroupTrainer(Protocol):
    """A model whose backbone's layer groups a callback may freeze and unfreeze (every `TransferModule` that trains
    its backbone; `FeatureExtraction` declares ``trains_backbone = False``)."""

    backbone: Backbone
    #: Whether the backbone can train at all (False: it runs under no_grad).
    trains_backbone: bool
    #: Whether BatchNorm running statistics stay fixed in trainable groups.
    freeze_bn: bool


@runtime_checkable
class NamedClassifier(Protocol):
    """A model that knows its class names in label order (every `TransferModule`, also from a checkpoint), and the
    ids the user's file gave them (`IdentifiedClasses`), or None."""

    class_names: list[str] | None
    class_ids: list[int] | None


@runtime_checkable
class CalibrationTracking(Protocol):
    """A model that accumulates its validation probabilities against the truth in a torchmetrics calibration-error
    metric (states ``confidences`` and ``accuracies``; None for a task without probabilities), for `TensorBoardReport`
    to draw as a reliability diagram and reset once per validation."""

    val_calibration: Any


@runtime_checkable
class CalibratedModel(Protocol):
    """A model whose probabilities are its logits divided by a fitted temperature (every `TransferModule`; 1 without
    temperature scaling)."""

    calibration_temperature: Any


@runtime_checkable
class HasTask(Protocol):
    """A model with a `tlkit.tasks.Task` (every `TransferModule`): what its predictions are and how they are judged."""

    task: Any


@runtime_checkable
class KnowsMetricDirections(Protocol):
    """A model that says which way each metric it logs is better, by logged name (every `TransferModule`: its task's
    metrics and its strategy's own)."""

    def logged_metric_directions(self) -> dict[str, str]: ...


@runtime_checkable
class FeatureExtractor(Protocol):
    """A model whose backbone features can be read: ``extract_features(images) -> (N, D)``."""

    def extract_features(self, x: Any) -> Any: ...


@runtime_checkable
class ConfusionTracking(Protocol):
    """A classifier that accumulates its validation predictions in a confusion matrix (a torchmetrics Metric,
    rows true, columns predicted), for `TensorBoardReport` to draw and reset once per validation."""

    confusion: Any
