"""`Task`: what a model predicts and how it is judged; the one part of a strategy that differs between single-label
classification, multi-label classification and regression.

A task owns the head's output size, the loss, the metrics, the metric checkpoints select on, the post-processing
that turns the head's outputs into what ``predict`` and the exported model return, what calibration and decision
state it fits on the validation split, and its entry in the checkpoint. It is an ``nn.Module`` so that the state it
fits (decision thresholds, the targets' mean and standard deviation) is in every checkpoint's ``state_dict`` and
identical on every DDP rank. The temperature of temperature scaling is the model's (every calibrated task shares
it), and is handed to each method that needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from tlkit.checkpoint import class_path, import_class
from tlkit.errors import ConfigError, config_error
from tlkit.protocols import TargetKind
from tlkit.tasks.export_check import PROBABILITIES, ExportCheck, Tolerance, differences, outside
from tlkit.tasks.heads import HeadOptions, make_head

#: Confidence bins of the expected calibration error (Guo et al., 2017, use 15).
ECE_BINS = 15

#: Which way a metric is better: what checkpoints, ``tlkit select`` and ``tlkit tune`` optimise it in.
Mode = Literal["max", "min"]


def direction_of(metric: Metric) -> Mode | None:
    """``max`` or ``min`` as the metric itself says (torchmetrics' ``higher_is_better``), None where it says
    neither (a diagnostic with no better direction)."""
    if metric.higher_is_better is None:
        return None
    return "max" if metric.higher_is_better else "min"


class Task(nn.Module):
    """The base of `Classification`, `MultiLabel` and `Regression`; a new task subclasses it.

    A task is built in two steps: its arguments at construction (from the config), then `build` once the number of
    outputs is known (from the model's ``num_classes`` or the datamodule), which creates the state sized by it.
    """

    #: Short name, written into checkpoints and ``model.json``.
    name: ClassVar[str]
    #: The targets the task trains on, as the datamodule must serve them (`tlkit.protocols.TargetKind`).
    target_kind: ClassVar[TargetKind]
    #: (metric, mode) that checkpoints, WiSE-FT and the TensorBoard ``hp_metric`` select on.
    monitor: ClassVar[tuple[str, str]]
    #: What the model outputs after `postprocess`: ``probabilities`` or ``values``.
    output_name: ClassVar[str] = "probabilities"
    #: Whether temperature scaling applies to its outputs.
    calibrates: ClassVar[bool] = True
    #: The fewest outputs the task can have (two classes; one label; one target).
    min_outputs: ClassVar[int] = 1
    #: Whether the head reads the backbone's multi-scale feature maps (dense tasks) instead of its pooled features.
    reads_feature_maps: ClassVar[bool] = False
    #: Whether ``predict`` writes files per sample (`write_prediction`: masks, drawn boxes) besides its table.
    writes_files: ClassVar[bool] = False
    #: Whether the exported model returns `postprocess`'s outputs, so that serving an export folder needs nothing
    #: but `response_record` (a detector's export leaves its score threshold and NMS to the caller).
    exports_predictions: ClassVar[bool] = True
    #: Which of the strategy's head options (`HeadOptions`) shape this task's head; another set to anything but its
    #: default is refused in one line (a dense task's decoder is its own).
    head_options: ClassVar[frozenset[str]] = frozenset({"head", "head_hidden_dim", "dropout"})

    def __init__(self) -> None:
        super().__init__()
        self.num_outputs: int | None = None

    # ---------------------------------------------------------------------------------------------------- building
    def build(self, num_outputs: int) -> None:
        """Create what depends on the number of outputs; called once the head's size is known."""
        self.num_outputs = num_outputs

    def learns_from_targets(self) -> bool:
        """Whether `prepare` needs the training targets (reading them costs a pass over the labels)."""
        return False

    def prepare(self, training_targets: np.ndarray | None) -> None:
        """Learn what the task needs of the training targets before training (N, outputs), e.g. their mean;
        called at each setup with the datamodule's training targets, or None when it serves none. Checkpointed
        state loaded afterwards replaces what this computed."""

    def backbone_features(self, backbone: nn.Module, images: torch.Tensor) -> Any:
        """What the head reads of ``backbone`` (a `tlkit.backbones.Backbone`): its pooled features, or a dense
        task's feature maps (`reads_feature_maps`); in training and in the exported model alike."""
        return backbone.feature_maps(images) if self.reads_feature_maps else backbone(images)

    def check_head_options(self, options: HeadOptions) -> None:
        """Refuse in one line a head option this task's head does not read (`head_options`)."""
        for name, (value, default) in options.changed().items():
            if name not in self.head_options:
                applies = ", ".join(sorted(self.head_options)) or "none"
                raise config_error(
                    name,
                    f"its default ({default!r}) with task {type(self).__name__}, whose head does not read it (the "
                    f"head options it reads: {applies})",
                    value,
                )

    def make_head(self, backbone: Any, num_outputs: int, options: HeadOptions) -> nn.Module:
        """The new head on what the task reads of ``backbone`` (a `tlkit.backbones.Backbone`): a linear or MLP head
        on its pooled features (`options`); a dense task's decoder on its feature maps."""
        return make_head(options.head, backbone.num_features, num_outputs, options.head_hidden_dim, options.dropout)

    # ---------------------------------------------------------------------------------------------------- training
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def make_metrics(self) -> dict[str, Metric]:
        """Fresh metrics, by name without the stage prefix (the model logs each as ``<stage>/<name>``)."""
        raise NotImplementedError

    def make_train_metrics(self) -> dict[str, Metric]:
        """Fresh metrics of the training batches (default: `make_metrics`'; none where computing them would cost a
        decoding pass per step, as detection's would)."""
        return self.make_metrics()

    def make_detail_metrics(self) -> dict[str, Metric]:
        """Fresh per-class metrics logged at validation and test beside `make_metrics`' (updated with the same
        `metric_inputs`), off the progress bar; none by default."""
        return {}

    def metric_inputs(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> tuple:
        """What `make_metrics`' collection is updated with for a batch: (predictions, targets)."""
        raise NotImplementedError

    def calibration_error(self) -> Metric | None:
        """A fresh expected-calibration-error metric (updated by `calibration_inputs`), or None for a task whose
        outputs are no probabilities."""
        return None

    def calibration_inputs(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> tuple:
        raise NotImplementedError

    # --------------------------------------------------------------------------------------------------- inference
    def postprocess(self, outputs: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """The head's outputs as ``predict`` returns them and the exported model computes them."""
        raise NotImplementedError

    def export_outputs(self, outputs: Any, temperature: torch.Tensor) -> torch.Tensor:
        """What the exported model returns: `postprocess`'s outputs (a task whose predictions vary in number per
        sample returns a fixed-shape form of them, and says in ``model.json`` what its caller does with it)."""
        return self.postprocess(outputs, temperature)

    def export_shape(self, input_size: int) -> list[Any]:
        """The shape of `export_outputs` for square inputs of ``input_size`` pixels, as ``model.json`` states it."""
        return ["batch", self.num_outputs]

    def export_tolerance(self) -> Tolerance:
        """How far each exported output may be from the checkpoint's (probabilities by default)."""
        return PROBABILITIES

    def check_export(self, exported: np.ndarray, expected: np.ndarray, scale: float = 1.0) -> ExportCheck:
        """Judge an export's `export_outputs` against the checkpoint's on the same images: every value within
        `export_tolerance` (times ``scale``), and what users rely on the same (`export_disagreement`, at the unscaled
        tolerance: a looser one accepts more rounding, never another answer where the checkpoint's was clear)."""
        tolerance = self.export_tolerance().scaled(scale)
        problem = outside(exported, expected, tolerance, self.output_name)
        problem = problem or self.export_disagreement(exported, expected, self.export_tolerance())
        return ExportCheck(*differences(exported, expected), self.export_criterion(tolerance), problem)

    def export_criterion(self, tolerance: Tolerance) -> str:
        """What `check_export` requires, in words."""
        return tolerance.describe()

    def export_disagreement(self, exported: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> str | None:
        """Where the export would answer a user differently (another top class, label set, mask) though the
        checkpoint's answer was clear by more than ``tolerance``, in words; None when it answers the same."""
        return None

    def fit_temperature(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The temperature that calibrates ``outputs`` (a whole validation split's) on ``targets``."""
        raise NotImplementedError

    #: Whether `fit_on_validation` needs the validation outputs even without temperature scaling.
    fits_on_validation: ClassVar[bool] = False

    def fit_on_validation(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> None:
        """Fit decision state on a whole validation split's outputs (every rank's), after the temperature."""

    def prediction_record(self, values: list[float], names: list[str], top_k: int) -> dict[str, Any]:
        """One sample's ``predict`` output (a row of `postprocess`) as the fields the prediction files hold."""
        raise NotImplementedError

    def response_record(
        self,
        output: Any,
        image_size: tuple[int, int] | None,
        names: list[str],
        class_ids: list[int] | None,
        top_k: int,
    ) -> dict[str, Any]:
        """One sample's prediction as ``tlkit serve`` answers it (``output`` a row of `postprocess`; ``image_size``
        the original image's (width, height), onto which masks and boxes are mapped back): `prediction_record`'s
        fields, or, for a task that `writes_files`, the files' contents inline (a mask as a base64 PNG)."""
        return self.prediction_record(output.tolist(), names, top_k)

    def write_prediction(
        self,
        output: torch.Tensor,
        image: Any,
        folder: Path,
        stem: str,
        names: list[str],
        class_ids: list[int] | None = None,
    ) -> dict[str, Any]:
        """For a task that `writes_files`: write one sample's files (``output`` a row of `postprocess`, ``image`` the
        original PIL image or None) under ``folder``, named by ``stem``; return its record. ``class_ids`` are the ids
        the user's file gave the classes (in label order), or None."""
        raise NotImplementedError

    def write_results(self, rows: list[dict[str, Any]], folder: Path, names: list[str]) -> Path | None:
        """For a task that `writes_files`: a file of every sample's record beside the table (detection's COCO
        results), or None."""
        return None

    def csv_columns(self, names: list[str], top_k: int) -> list[str]:
        raise NotImplementedError

    def csv_row(self, record: dict[str, Any], names: list[str]) -> list[str]:
        raise NotImplementedError

    def metric_directions(self) -> dict[str, Mode]:
        """Each metric the task logs, by name without the stage prefix (``mae``, ``map``, ``ece``), and which way is
        better, as each metric says (`direction_of`); ``loss`` goes down. What ``tlkit select`` and ``tlkit tune``
        ask: no command guesses a direction from a metric's name."""
        task = self if self.num_outputs is not None else self._sized_copy()
        metrics = {**task.make_metrics(), **task.make_detail_metrics()}
        calibration = task.calibration_error()
        if calibration is not None:  # logged at test, with and without the fitted temperature
            metrics["ece"] = metrics["ece_unscaled"] = calibration
        directions: dict[str, Mode] = {"loss": "min"}
        directions.update({name: mode for name, metric in metrics.items() if (mode := direction_of(metric))})
        return directions

    def _sized_copy(self) -> Task:
        """An unbuilt task's twin built with its fewest outputs: its metrics, for their directions."""
        twin = Task.from_config(self.config())
        twin.build(max(self.min_outputs, 2))
        return twin

    def metric_for_selection(self) -> Metric:
        """A fresh metric computing the `monitor` value from `metric_inputs` (WiSE-FT chooses its mix with it)."""
        return self.make_metrics()[self.monitor[0].split("/", 1)[1]]

    # ---------------------------------------------------------------------------------------------------- records
    def arguments(self) -> dict[str, Any]:
        """The task's constructor arguments, as plain data."""
        return {}

    def config(self) -> dict[str, Any]:
        """The task as a config entry (``class_path``, ``init_args``): what hyperparameters and checkpoints keep."""
        return {"class_path": class_path(type(self)), "init_args": self.arguments()}

    def describe(self) -> dict[str, Any]:
        """The task and its fitted state, as plain data: the checkpoint's ``task`` entry and ``model.json``'s."""
        return {"name": self.name, **self.config()}

    def restore(self, described: dict[str, Any]) -> None:
        """Take back the fitted state `describe` wrote (a built task; ``model.json``'s ``task`` entry)."""

    @staticmethod
    def from_description(described: dict[str, Any], num_outputs: int) -> Task:
        """The task `describe` wrote (``model.json``'s ``task``), built for ``num_outputs`` with its fitted state."""
        task = Task.from_config(described)
        task.build(num_outputs)
        task.restore(described)
        return task

    @staticmethod
    def from_config(value: Any) -> Task:
        """A task from what `config` wrote (hyperparameters of a checkpoint), or a task as it is."""
        if isinstance(value, Task):
            return value
        if isinstance(value, dict) and "class_path" in value:
            cls = import_class(value["class_path"])
            if cls is None or not (isinstance(cls, type) and issubclass(cls, Task)):
                raise ConfigError(f"Expected `model.task` to name a tlkit task class, but got {value['class_path']!r}.")
            return cls(**(value.get("init_args") or {}))
        raise ConfigError(
            f"Expected `model.task` to be a task (Classification, MultiLabel or Regression), but got {value!r}."
        )
