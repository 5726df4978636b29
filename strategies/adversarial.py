"""Adversarial domain adaptation: `DANN` and `CDAN`, both with a gradient-reversed domain discriminator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryAccuracy

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.functional import entropy, grad_reverse, warm_start_lambda
from tlkit.strategies.domain_adaptation import DomainAdaptation


def domain_discriminator(in_features: int, hidden_dim: int) -> nn.Sequential:
    """Two hidden layers with BatchNorm, as in DANN and TLlib, ending in one logit (source vs target)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, 1),
    )


def domain_labels(n_source: int, n_target: int, device: torch.device) -> torch.Tensor:
    """1 for source rows, 0 for target rows."""
    return torch.cat([torch.ones(n_source, device=device), torch.zeros(n_target, device=device)])


def binary_domain_loss(domain_logits: torch.Tensor, n_source: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of the discriminator's logits (source rows first), optionally weighted per row."""
    labels = domain_labels(n_source, len(domain_logits) - n_source, domain_logits.device).to(domain_logits.dtype)
    losses = F.binary_cross_entropy_with_logits(domain_logits.squeeze(1), labels, reduction="none")
    return losses.mean() if weights is None else (weights * losses).sum() / weights.sum()


class _Adversarial(DomainAdaptation):
    """Shared by DANN and CDAN: gradient reversal with DANN's warm-start coefficient, domain accuracy logging.

    Args:
        discriminator_hidden_dim: width of the discriminator's two hidden layers.

    The other arguments are `DomainAdaptation`'s.
    """

    def __init__(
        self, backbone: str | Backbone = "tf_efficientnet_lite0", *, discriminator_hidden_dim: int = 1024, **kwargs
    ) -> None:
        if discriminator_hidden_dim < 1:
            raise config_error("discriminator_hidden_dim", "an integer >= 1", discriminator_hidden_dim)
        self.discriminator_hidden_dim = discriminator_hidden_dim
        super().__init__(backbone, **kwargs)

    def grl_coefficient(self) -> float:
        """lambda = 2 / (1 + exp(-10 p)) - 1 with p the progress of the adapting epochs, from the step counter
        (resume-safe)."""
        return warm_start_lambda(self.adaptation_progress)

    def discriminator_input(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return features

    def adaptation_loss(self, source_features, target_features, source_logits, target_logits):
        coefficient = self.grl_coefficient()
        self.log("train/grl_lambda", coefficient, on_step=True, on_epoch=False, batch_size=len(source_features))
        features = torch.cat([source_features, target_features])
        logits = torch.cat([source_logits, target_logits])
        domain_logits = self.discriminator(grad_reverse(self.discriminator_input(features, logits), coefficient))
        return self.domain_loss(domain_logits, logits, len(source_features))

    def domain_loss(self, domain_logits: torch.Tensor, logits: torch.Tensor, n_source: int) -> torch.Tensor:
        return binary_domain_loss(domain_logits, n_source)

    def validation_features(self, features: torch.Tensor, domain: str) -> None:
        domain_logits = self.discriminator(self.discriminator_input(features, self.head(features))).squeeze(1)
        target = torch.full_like(domain_logits, 1 if domain == "source" else 0, dtype=torch.long)
        self.domain_accuracy.update(domain_logits.sigmoid(), target)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        # Logged here rather than per step: the metric spans both validation loaders (source and target).
        # The Metric itself: Lightning computes it (a collective) in the same order on every rank, then resets it.
        self.log("val/domain_acc", self.domain_accuracy)


class DANN(_Adversarial):
    """Domain-adversarial training (Ganin & Lempitsky, 2015): a domain discriminator on the features, trained through
    a gradient reversal layer so the backbone learns features the discriminator cannot tell apart.

    The reversal coefficient follows lambda = 2 / (1 + exp(-10 p)) - 1, with p computed from
    ``trainer.global_step / trainer.estimated_stepping_batches`` so it continues correctly after a resume.

    Takes the arguments of the shared adversarial base: ``discriminator_hidden_dim`` (the width of the
    discriminator's two hidden layers) and `DomainAdaptation`'s.
    """

    def build_adaptation_modules(self, num_classes: int) -> None:
        self.discriminator = domain_discriminator(self.backbone.num_features, self.discriminator_hidden_dim)
        self.domain_accuracy = BinaryAccuracy()


class CDAN(_Adversarial):
    """Conditional domain-adversarial training (Long et al., 2018): the discriminator sees the multilinear map of
    features and class predictions, so alignment respects the classes; entropy conditioning weights confident
    examples up.

    When ``num_features * num_classes`` exceeds ``randomized_dim``, the randomized multilinear map
    ``(f R_f) * (g R_g) / sqrt(d)`` with fixed random matrices replaces the outer product.

    Args:
        randomized_dim: output size of the randomized multilinear map, used when the outer product is larger.
        entropy_conditioning: weight each example by ``1 + exp(-entropy)`` of its prediction.

    The other arguments are the shared adversarial base's (``discriminator_hidden_dim``) and `DomainAdaptation`'s.
    """

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        *,
        randomized_dim: int = 1024,
        entropy_conditioning: bool = True,
        **kwargs,
    ) -> None:
        if randomized_dim < 1:
            raise config_error("randomized_dim", "an integer >= 1", randomized_dim)
        self.randomized_dim = randomized_dim
        self.entropy_conditioning = entropy_conditioning
        super().__init__(backbone, **kwargs)

    def build_adaptation_modules(self, num_classes: int) -> None:
        f = self.backbone.num_features
        self.randomized = f * num_classes > self.randomized_dim
        if self.randomized:
            # Fixed random projections, saved with the model (buffers) so a resumed run uses the same map.
            generator = torch.Generator().manual_seed(0)
            self.register_buffer("random_features", torch.randn(f, self.randomized_dim, generator=generator))
            self.register_buffer("random_classes", torch.randn(num_classes, self.randomized_dim, generator=generator))
            in_features = self.randomized_dim
        else:
            in_features = f * num_classes
        self.discriminator = domain_discriminator(in_features, self.discriminator_hidden_dim)
        self.domain_accuracy = BinaryAccuracy()

    def discriminator_input(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        g = F.softmax(logits, dim=1).detach()  # the class predictions condition the map but are not trained by it
        if self.randomized:
            return (features @ self.random_features) * (g @ self.random_classes) / math.sqrt(self.randomized_dim)
        return torch.bmm(g.unsqueeze(2), features.unsqueeze(1)).flatten(1)

    def domain_loss(self, domain_logits: torch.Tensor, logits: torch.Tensor, n_source: int) -> torch.Tensor:
        if not self.entropy_conditioning:
            return binary_domain_loss(domain_logits, n_source)
        weights = 1.0 + torch.exp(-entropy(logits.detach(), reduction="none"))
        # Normalise per domain so each domain carries the same total weight.
        weights[:n_source] = weights[:n_source] / weights[:n_source].sum()
        weights[n_source:] = weights[n_source:] / weights[n_source:].sum()
        return binary_domain_loss(domain_logits, n_source, weights)
