"""`Regression`: one or more numeric targets, learnt standardised and returned in their original units."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, R2Score

from tlkit.errors import config_error
from tlkit.tasks.base import Task
from tlkit.tasks.export_check import Tolerance

RegressionLoss = Literal["mse", "l1", "huber"]
_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}


class Regression(Task):
    """Regression on one or more numeric targets.

    The head predicts each target standardised with the training split's mean and standard deviation (kept in the
    checkpoint); ``predict``, the metrics and the exported model give values in the targets' own units. Metrics:
    mean absolute error (``mae``, what checkpoints select on, lower is better), root mean squared error and R²
    (averaged over targets). Temperature scaling does not apply.

    Args:
        loss: ``mse``, ``l1`` or ``huber`` (delta 1, in standard deviations), on the standardised targets.

    Examples:
        >>> model = FineTuning("resnet18", weights=None, num_classes=1, task=Regression(loss="huber"))
    """

    name: ClassVar[str] = "regression"
    target_kind = "values"
    monitor = ("val/mae", "min")
    output_name: ClassVar[str] = "values"
    calibrates: ClassVar[bool] = False

    def __init__(self, loss: RegressionLoss = "mse") -> None:
        super().__init__()
        if loss not in _LOSSES:
            raise config_error("task.loss", "'mse', 'l1' or 'huber'", loss)
        self.loss_name = loss

    def build(self, num_outputs: int) -> None:
        super().build(num_outputs)
        #: The training targets' mean and standard deviation: outputs are in these units, targets are scaled by them.
        self.register_buffer("target_mean", torch.zeros(num_outputs, dtype=torch.float64))
        self.register_buffer("target_std", torch.ones(num_outputs, dtype=torch.float64))

    def learns_from_targets(self) -> bool:
        return True

    def prepare(self, training_targets: np.ndarray | None) -> None:
        if training_targets is None or len(training_targets) == 0:
            return
        values = np.asarray(training_targets, dtype=np.float64).reshape(len(training_targets), -1)
        std = values.std(axis=0)
        self.target_mean.copy_(torch.as_tensor(values.mean(axis=0)))
        # A constant target keeps unit scale (nothing to standardise; no division by zero).
        self.target_std.copy_(torch.as_tensor(np.where(std > 0, std, 1.0)))

    def standardised(self, targets: torch.Tensor) -> torch.Tensor:
        mean, std = self.target_mean.to(targets.device), self.target_std.to(targets.device)
        return ((targets.double() - mean) / std).float()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return _LOSSES[self.loss_name](outputs, self.standardised(targets).to(outputs.dtype))

    def make_metrics(self) -> dict[str, Metric]:
        return {
            "mae": MeanAbsoluteError(),
            "rmse": MeanSquaredError(squared=False),
            "r2": R2Score(multioutput="uniform_average"),
        }

    def metric_inputs(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> tuple:
        values, targets = self.postprocess(outputs.float(), temperature).float(), targets.float()
        if self.num_outputs == 1:  # R2Score takes one target as (N,)
            return values.reshape(-1), targets.reshape(-1)
        return values, targets

    def export_tolerance(self) -> Tolerance:
        """Values in the targets' units: relative, with an absolute floor of 1e-4 of the smallest target's standard
        deviation (values near 0 carry the float error of the scale they were computed at)."""
        return Tolerance(rtol=1e-3, atol=1e-4 * float(self.target_std.min()))

    def postprocess(self, outputs: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        mean, std = self.target_mean.to(outputs.dtype), self.target_std.to(outputs.dtype)
        return outputs * std + mean

    def prediction_record(self, values: list[float], names: list[str], top_k: int) -> dict[str, Any]:
        return {"values": {name: round(v, 6) for name, v in zip(names, values)}}

    def csv_columns(self, names: list[str], top_k: int) -> list[str]:
        return ["file", *names]

    def csv_row(self, record: dict[str, Any], names: list[str]) -> list[str]:
        return [record["file"], *(f"{record['values'][n]:.6g}" for n in names)]

    def arguments(self) -> dict[str, Any]:
        return {"loss": self.loss_name}

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if self.num_outputs is not None:
            described["target_mean"] = self.target_mean.tolist()
            described["target_std"] = self.target_std.tolist()
        return described

    def restore(self, described: dict[str, Any]) -> None:
        if "target_mean" in described and "target_std" in described:
            self.target_mean.copy_(torch.tensor(described["target_mean"], dtype=torch.float64))
            self.target_std.copy_(torch.tensor(described["target_std"], dtype=torch.float64))
