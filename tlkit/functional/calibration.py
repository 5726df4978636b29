"""Temperature scaling (Guo et al., ICML 2017): a classifier's logits divided by one scalar fitted on held-out data.
Accuracy is unchanged (so is the argmax); the probabilities become ones a decision can rely on. (The expected
calibration error it is judged by is torchmetrics' ``MulticlassCalibrationError``.)"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    Optimised over log T (so T stays positive) with L-BFGS from T = 1, in float64: the same inputs give the same T
    on every process. ``logits``: (N, C); ``labels``: (N,) class indices.
    """
    logits, labels = logits.detach().double(), labels.detach().long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp())
