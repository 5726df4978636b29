"""`ClassIoU`: the intersection over union of one class's pixels, as a metric of its own (so that every class's IoU
is one scalar Lightning logs and synchronises, beside the mean IoU)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ClassIoU(Metric):
    """IoU of class ``index`` over every pixel updated with (predicted classes, target classes), both (N, H, W);
    target pixels at ``ignore_index`` are left out. NaN until the class appears in a target or a prediction."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, index: int, ignore_index: int) -> None:
        super().__init__()
        self.index, self.ignore_index = index, ignore_index
        self.add_state("intersection", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("union", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        valid = targets != self.ignore_index
        predicted, actual = (predictions == self.index) & valid, (targets == self.index) & valid
        self.intersection += (predicted & actual).sum()
        self.union += (predicted | actual).sum()

    def compute(self) -> torch.Tensor:
        return (self.intersection / self.union).float() if self.union > 0 else torch.tensor(float("nan"))
