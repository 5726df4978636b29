"""`FeatureExtraction`: a frozen pretrained backbone, a new head trained on its features."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info

from tlkit.backbones import Backbone
from tlkit.data_request import Features
from tlkit.features import FeatureCache, FeatureServing
from tlkit.protocols import ServesFeatures
from tlkit.strategies.transfer_module import TransferModule


class FeatureExtraction(TransferModule):
    """Train only the head; the backbone is frozen, its BatchNorm statistics never change, and it runs under no_grad.

    With a tlkit datamodule and deterministic transforms (``augment: false`` for training; evaluation always is),
    the backbone's features are computed once and the head trains on the cached features: an N-epoch linear probe
    costs one backbone pass over the data plus N cheap head epochs. The cache is keyed by backbone weights,
    transform and data, so a change to any of them computes afresh. With random training augmentation the training
    features cannot be cached; the log says so.

    Args:
        cache_features: ``memory``, ``disk`` (under ``cache_dir``, reused across runs) or ``off``.
        cache_dir: folder for ``disk`` caching.

    The other arguments are `TransferModule`'s.

    Examples:
        >>> model = FeatureExtraction("resnet18", weights=None, num_classes=10)
        >>> model.backbone.trainable_group_names
        []
    """

    trains_backbone: ClassVar[bool] = False

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        *,
        cache_features: Literal["memory", "disk", "off"] = "memory",
        cache_dir: str = ".tlkit_cache",
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        #: Where the backbone's features are kept (None with ``cache_features: off``).
        self.feature_cache = None if cache_features == "off" else FeatureCache(cache_features, cache_dir)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self.trainer.datamodule
        if self.feature_cache is not None and self.task.reads_feature_maps:
            rank_zero_info(
                f"FeatureCache: task {type(self.task).__name__} reads the backbone's feature maps, which are not "
                "cached (at every scale they outweigh the images); the frozen backbone runs every step, with no graph."
            )
        elif self.feature_cache is not None and isinstance(datamodule, ServesFeatures):
            # After the datamodule's setup, before its loaders: the frozen backbone's features instead of images.
            datamodule.serve_features(FeatureServing(self.feature_cache, self.backbone))

    def configure_backbone(self) -> None:
        self.backbone.freeze(bn_eval=True)

    def extract_features(self, x: torch.Tensor | Features) -> torch.Tensor:
        # No graph through the backbone: no activation memory, and no gradient can reach a frozen weight.
        with torch.no_grad():
            return super().extract_features(x)
