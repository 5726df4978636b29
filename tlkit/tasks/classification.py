"""`Classification`: one class per example (softmax over the classes, cross-entropy); tlkit's default task."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score

from tlkit.functional.calibration import fit_temperature
from tlkit.tasks.base import ECE_BINS, Task
from tlkit.tasks.export_check import Tolerance, top_changed


class Classification(Task):
    """Single-label classification: cross-entropy on the logits; accuracy, macro F1 and (from 5 classes) top-5
    accuracy; ``predict`` and the exported model give each class's probability (softmax of the logits divided by the
    fitted temperature); checkpoints select on ``val/acc``.

    Examples:
        >>> model = FineTuning("resnet18", weights=None, num_classes=10, task=Classification())
    """

    name: ClassVar[str] = "classification"
    target_kind = "class"
    monitor = ("val/acc", "max")
    min_outputs: ClassVar[int] = 2

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)

    def make_metrics(self) -> dict[str, Metric]:
        n = self.num_outputs
        metrics: dict[str, Metric] = {
            "acc": MulticlassAccuracy(n, average="micro"),
            "f1": MulticlassF1Score(n, average="macro"),
        }
        if n >= 5:
            metrics["acc_top5"] = MulticlassAccuracy(n, top_k=5, average="micro")
        return metrics

    def metric_inputs(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> tuple:
        # A positive temperature leaves every argmax, so these metrics, as they are.
        return outputs, targets

    def calibration_error(self) -> Metric:
        """The expected calibration error of the top prediction over 15 equal-width confidence bins."""
        return MulticlassCalibrationError(self.num_outputs, n_bins=ECE_BINS, norm="l1")

    def calibration_inputs(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> tuple:
        return outputs / temperature.to(outputs.dtype), targets

    def fit_temperature(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return fit_temperature(outputs, targets)

    def export_criterion(self, tolerance: Tolerance) -> str:
        return f"{tolerance.describe()}, and the same top class"

    def export_disagreement(self, exported: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> str | None:
        changed = int(top_changed(exported, expected, tolerance).sum())
        return f"the top class differs on {changed} of {len(expected)} images" if changed else None

    def postprocess(self, outputs: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        return (outputs / temperature.to(outputs.dtype)).softmax(dim=-1)

    def prediction_record(self, values: list[float], names: list[str], top_k: int) -> dict[str, Any]:
        order = sorted(range(len(values)), key=lambda i: -values[i])[: min(top_k, len(values))]
        top = [{"class": names[i], "probability": round(values[i], 6)} for i in order]
        return {"prediction": top[0]["class"], "probability": top[0]["probability"], "top_k": top}

    def csv_columns(self, names: list[str], top_k: int) -> list[str]:
        return ["file", "prediction", "probability", "top_k"]

    def csv_row(self, record: dict[str, Any], names: list[str]) -> list[str]:
        top = " ".join(f"{t['class']}:{t['probability']:.4f}" for t in record["top_k"])
        return [record["file"], record["prediction"], f"{record['probability']:.6f}", top]
