"""A deliberately harmful adaptation, for the fallback tests: once adapting, it teaches the source a shifted label
(``y + 1``) and makes the target's predictions confident, so IM rises while accuracy falls (MCC's failure)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tlkit.strategies import DomainAdaptation


class ForgettingAdaptation(DomainAdaptation):
    def training_step(self, batch, batch_idx):
        if not self.adapting:
            return super().training_step(batch, batch_idx)
        (xs, ys), xt = batch["source"], batch["target"]
        logits = self(torch.cat([xs, xt]))
        shifted = (ys + 1) % logits.shape[1]
        target = logits[len(xs) :]
        loss = 5 * F.cross_entropy(logits[: len(xs)], shifted) + F.cross_entropy(target, target.argmax(dim=1).detach())
        self.log_training(loss, loss, None, 0.0, logits[: len(xs)], ys)
        return loss
