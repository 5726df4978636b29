"""`FeatureExtraction`: a frozen pretrained backbone, a new head trained on its features."""

from __future__ import annotations

import torch

from tlkit.strategies.transfer_module import TransferModule


class FeatureExtraction(TransferModule):
    """Train only the head; the backbone is frozen, its BatchNorm statistics never change, and it runs under no_grad.

    Takes `TransferModule`'s arguments.

    Example:
        >>> model = FeatureExtraction("resnet18", weights=None, num_classes=10)
        >>> model.backbone.trainable_group_names
        []
    """

    def configure_backbone(self) -> None:
        self.backbone.freeze(bn_eval=True)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        # No graph through the backbone: no activation memory, and no gradient can reach a frozen weight.
        with torch.no_grad():
            return self.backbone(x)
