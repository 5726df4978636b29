"""`MultiLabel`: any number of labels per example (one sigmoid per label, binary cross-entropy), with decision
thresholds chosen per label on the validation split."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import (
    BinaryCalibrationError,
    MultilabelAveragePrecision,
    MultilabelExactMatch,
    MultilabelF1Score,
)

from tlkit.errors import config_error
from tlkit.functional.calibration import best_f1_thresholds, fit_binary_temperature
from tlkit.tasks.base import ECE_BINS, Task
from tlkit.tasks.export_check import Tolerance


class MultiLabel(Task):
    """Multi-label classification: a sigmoid per label and binary cross-entropy on the logits.

    Each label's decision threshold is chosen on the validation split at every validation (the one of 0.05, 0.10,
    ..., 0.95 that maximises the label's F1; 0.5 for a label without a positive validation example) and saved in the
    checkpoint, unless ``threshold`` fixes one for all. Metrics: macro mean average precision (``map``, what
    checkpoints select on), micro and macro F1 and exact-match accuracy at those thresholds; ``test/ece`` treats every
    (example, label) probability as one binary prediction. ``predict`` writes every label's probability and the
    labels at or above their thresholds.

    Args:
        pos_weight: weight of the positive term of each label's loss: ``null`` (1), ``auto`` (negatives over
            positives in the training split, as torch's ``pos_weight`` suggests for rare labels), or one number per
            label.
        threshold: one decision threshold in (0, 1) for every label; ``null`` chooses them on the validation split.

    Examples:
        >>> model = FineTuning("resnet18", weights=None, num_classes=10, task=MultiLabel(pos_weight="auto"))
    """

    name: ClassVar[str] = "multilabel"
    target_kind = "labels"
    monitor = ("val/map", "max")
    fits_on_validation: ClassVar[bool] = True

    def __init__(self, pos_weight: str | list[float] | None = None, threshold: float | None = None) -> None:
        super().__init__()
        if isinstance(pos_weight, str) and pos_weight != "auto":
            raise config_error("task.pos_weight", "'auto', one number per label, or null", pos_weight)
        if isinstance(pos_weight, list) and any(not w > 0 for w in pos_weight):
            raise config_error("task.pos_weight", "positive numbers, one per label", pos_weight)
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise config_error("task.threshold", "in (0, 1), or null to choose one per label on validation", threshold)
        self.pos_weight_option, self.threshold = pos_weight, threshold

    def build(self, num_outputs: int) -> None:
        super().build(num_outputs)
        if isinstance(self.pos_weight_option, list) and len(self.pos_weight_option) != num_outputs:
            raise config_error(
                "task.pos_weight", f"one number per label ({num_outputs})", f"{len(self.pos_weight_option)} numbers"
            )
        start = 0.5 if self.threshold is None else self.threshold
        #: Each label's decision threshold on its (calibrated) probability.
        self.register_buffer("thresholds", torch.full((num_outputs,), start, dtype=torch.float64))
        weights = self.pos_weight_option if isinstance(self.pos_weight_option, list) else [1.0] * num_outputs
        self.register_buffer("pos_weight", torch.tensor(weights, dtype=torch.float32))

    def learns_from_targets(self) -> bool:
        return self.pos_weight_option == "auto"

    def prepare(self, training_targets: np.ndarray | None) -> None:
        if self.pos_weight_option != "auto" or training_targets is None:
            return
        positives = training_targets.sum(axis=0)
        negatives = len(training_targets) - positives
        # A label absent from training gets weight 1: there is nothing to balance.
        weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
        self.pos_weight.copy_(torch.as_tensor(weights, dtype=torch.float32))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype), pos_weight=self.pos_weight)

    def make_metrics(self) -> dict[str, Metric]:
        n = self.num_outputs
        return {
            "map": MultilabelAveragePrecision(n, average="macro"),
            "f1_micro": MultilabelF1Score(n, average="micro"),
            "f1_macro": MultilabelF1Score(n, average="macro"),
            "exact_match": MultilabelExactMatch(n),
        }

    def metric_inputs(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> tuple:
        # Each label's logit shifted so that its threshold falls at 0.5, where torchmetrics decides: F1 and exact
        # match then count the decisions `predict` makes, and average precision (a ranking, unchanged by a
        # monotone shift of a label's scores) is as it would be on the probabilities.
        shift = torch.logit(self.thresholds).to(outputs.dtype)
        return torch.sigmoid(outputs / temperature.to(outputs.dtype) - shift), targets.long()

    def calibration_error(self) -> Metric:
        return BinaryCalibrationError(n_bins=ECE_BINS, norm="l1")

    def calibration_inputs(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> tuple:
        return self.postprocess(outputs, temperature).reshape(-1), targets.reshape(-1).long()

    def fit_temperature(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return fit_binary_temperature(outputs, targets)

    def export_criterion(self, tolerance: Tolerance) -> str:
        return f"{tolerance.describe()}, and the same label set at the decision thresholds"

    def export_disagreement(self, exported: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> str | None:
        thresholds = self.thresholds.cpu().numpy()
        clear = np.abs(expected - thresholds) > tolerance.bound(expected)  # not within reach of its threshold
        changed = int((((exported >= thresholds) != (expected >= thresholds)) & clear).any(axis=1).sum())
        return f"the label set differs on {changed} of {len(expected)} images" if changed else None

    def postprocess(self, outputs: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs / temperature.to(outputs.dtype))

    def fit_on_validation(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> None:
        if self.threshold is None:
            self.thresholds.copy_(best_f1_thresholds(self.postprocess(outputs.double(), temperature), targets))

    def prediction_record(self, values: list[float], names: list[str], top_k: int) -> dict[str, Any]:
        thresholds = self.thresholds.tolist()
        return {
            "labels": [name for name, p, t in zip(names, values, thresholds) if p >= t],
            "probabilities": {name: round(p, 6) for name, p in zip(names, values)},
        }

    def csv_columns(self, names: list[str], top_k: int) -> list[str]:
        return ["file", "labels", *names]

    def csv_row(self, record: dict[str, Any], names: list[str]) -> list[str]:
        probabilities = record["probabilities"]
        return [record["file"], ";".join(record["labels"]), *(f"{probabilities[n]:.6f}" for n in names)]

    def arguments(self) -> dict[str, Any]:
        return {"pos_weight": self.pos_weight_option, "threshold": self.threshold}

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if self.num_outputs is not None:
            described["thresholds"] = self.thresholds.tolist()
        return described

    def restore(self, described: dict[str, Any]) -> None:
        if "thresholds" in described:
            self.thresholds.copy_(torch.tensor(described["thresholds"], dtype=torch.float64))
