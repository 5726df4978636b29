"""Weight-space interpolation between a reference and a fine-tuned model: WiSE-FT (Wortsman et al., CVPR 2022).

``(1 - alpha) * reference + alpha * fine_tuned``: 0 is the reference (the pretrained backbone, or the end of a linear
probe), 1 the fine-tuned model. Fine-tuning forgets part of what made the pretrained model robust to distribution
shift; interpolating gives back much of that robustness at little or no cost in distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tlkit.errors import config_error

#: The coefficients evaluated by default: 0 (reference) to 1 (fine-tuned) in steps of 0.1.
DEFAULT_ALPHAS = tuple(i / 10 for i in range(11))


def interpolate_state(
    reference: Mapping[str, torch.Tensor],
    fine_tuned: Mapping[str, torch.Tensor],
    alpha: float,
    keys: Collection[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``fine_tuned`` with each floating-point entry in ``keys`` (default: all in both) moved to
    ``(1 - alpha) * reference + alpha * fine_tuned``.

    BatchNorm running means and variances are floating point and interpolate with the weights, so the two endpoints
    are exactly the two models (``torch.lerp`` is exact at 0 and 1); integer entries (``num_batches_tracked``) and
    entries outside ``keys`` keep the fine-tuned value.
    """
    if not 0.0 <= alpha <= 1.0:
        raise config_error("alpha", "in [0, 1]", alpha)
    keys = set(reference) & set(fine_tuned) if keys is None else set(keys)
    mixed = dict(fine_tuned)
    for key in keys:
        end = fine_tuned[key]
        if end.is_floating_point():
            mixed[key] = torch.lerp(reference[key].to(end.device, end.dtype), end, alpha)
    return mixed


@dataclass(frozen=True)
class InterpolationCurve:
    """What `select_alpha` measured: the score at each coefficient, and the coefficient it chose."""

    alphas: tuple[float, ...]
    scores: tuple[float, ...]
    best_alpha: float

    @property
    def best_score(self) -> float:
        return self.scores[self.alphas.index(self.best_alpha)]


def select_alpha(
    model: nn.Module,
    reference: Mapping[str, torch.Tensor],
    evaluate: Callable[[nn.Module], float],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    keys: Collection[str] | None = None,
) -> InterpolationCurve:
    """Evaluate ``model`` interpolated toward ``reference`` at each of ``alphas``, leave it at the best one.

    ``model`` holds the fine-tuned weights on entry; ``evaluate(model)`` returns a score to maximise (validation
    accuracy, say). Ties go to the smallest coefficient: equal validation accuracy, and closer to the reference,
    which is what keeps robustness to shift.

    Examples:
        >>> reference = {k: v.clone() for k, v in model.state_dict().items()}  # before fine-tuning
        >>> ...  # fine-tune
        >>> curve = select_alpha(model, reference, lambda m: accuracy(m, val_loader))
    """
    if not alphas:
        raise config_error("alphas", "at least one coefficient in [0, 1]", list(alphas))
    fine_tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    scores = []
    for alpha in alphas:
        model.load_state_dict(interpolate_state(reference, fine_tuned, alpha, keys))
        scores.append(float(evaluate(model)))
    best = max(range(len(alphas)), key=lambda i: (scores[i], -alphas[i]))
    model.load_state_dict(interpolate_state(reference, fine_tuned, alphas[best], keys))
    return InterpolationCurve(tuple(alphas), tuple(scores), alphas[best])
