"""Temperature scaling (Guo et al., ICML 2017): a classifier's logits divided by one scalar fitted on held-out data.
Accuracy is unchanged (so is the argmax); the probabilities become ones a decision can rely on. (The expected
calibration error it is judged by is torchmetrics' ``MulticlassCalibrationError``.)"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    Optimised over log T (so T stays positive) with L-BFGS from T = 1, in float64: the same inputs give the same T
    on every process. ``logits``: (N, C); ``labels``: (N,) class indices.
    """
    labels = labels.detach().long()
    return _fit_temperature(logits, lambda scaled: F.cross_entropy(scaled, labels), max_iter)


def fit_binary_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 100) -> float:
    """The one temperature T > 0 minimising the binary cross-entropy of ``targets`` under ``sigmoid(logits / T)``,
    over every (example, label) entry: temperature scaling for multi-label outputs, fitted as `fit_temperature` is.
    ``logits`` and ``targets``: (N, L), targets 0 or 1."""
    targets = targets.detach().double()
    return _fit_temperature(logits, lambda scaled: F.binary_cross_entropy_with_logits(scaled, targets), max_iter)


def _fit_temperature(logits: torch.Tensor, nll: Callable[[torch.Tensor], torch.Tensor], max_iter: int) -> float:
    """The T > 0 minimising ``nll(logits / T)``: L-BFGS over log T from T = 1, in float64."""
    logits = logits.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nll(logits / log_t.exp())
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp())


def best_f1_thresholds(probabilities: torch.Tensor, targets: torch.Tensor, default: float = 0.5) -> torch.Tensor:
    """Per label, the decision threshold on ``probabilities`` (N, L) that maximises that label's F1 on ``targets``.

    Candidates are the grid 0.05, 0.10, ..., 0.95; ties go to the candidate nearest ``default``, and a label with no
    positive example keeps ``default`` (no threshold can be judged on it). Deterministic: the same inputs give the
    same thresholds on every process.
    """
    probabilities, targets = probabilities.detach().double(), targets.detach().bool()
    grid = torch.arange(1, 20, dtype=torch.float64) / 20  # (G,)
    predicted = probabilities.unsqueeze(0) >= grid.view(-1, 1, 1)  # (G, N, L)
    true_positive = (predicted & targets).sum(dim=1).double()
    f1 = 2 * true_positive / (predicted.sum(dim=1) + targets.sum(dim=0)).double().clamp_min(1)  # (G, L)
    # Prefer the best F1, then the candidate nearest the default: a tiny tie-breaking penalty on the distance.
    score = f1 - 1e-9 * (grid - default).abs().view(-1, 1)
    chosen = grid[score.argmax(dim=0)]
    return torch.where(targets.any(dim=0), chosen, torch.full_like(chosen, default))
