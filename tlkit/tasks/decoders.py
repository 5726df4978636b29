"""Decoders that dense tasks put on a backbone's multi-scale feature maps.

`SemanticFPN` (Kirillov et al., 2019, "Panoptic Feature Pyramid Networks"): a feature pyramid (torchvision's
``FeaturePyramidNetwork``: a 1x1 lateral convolution per map, a top-down pathway summing each coarser level into the
finer one, a 3x3 convolution per level), then each level refined by a 3x3 convolution, brought to the finest level's
resolution, summed and classified by a 1x1 convolution, and upsampled to the input's size. Chosen over a UNet-style
decoder because it takes any number of maps of any widths with the same few parameters per level (a UNet's widths
follow the encoder's), it is light (about 0.2 M parameters at 64 channels), and the same pyramid is what detection
heads read, so the two dense tasks share one neck.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from tlkit.protocols import FeatureMap

#: The finest stride a pyramid reads (Semantic FPN's P2): a stride-2 map costs four times a stride-4 one.
FINEST_STRIDE = 4


def pyramid_levels(feature_info: Sequence[FeatureMap]) -> list[int]:
    """Indices of the maps a pyramid reads: those at stride 4 or coarser (every map when all are finer)."""
    levels = [i for i, m in enumerate(feature_info) if m.stride >= FINEST_STRIDE]
    return levels or list(range(len(feature_info)))


class SemanticFPN(nn.Module):
    """Per-pixel class logits at the input's resolution from a backbone's feature maps.

    Args:
        feature_info: the backbone's maps (`Backbone.feature_info`).
        num_classes: output channels (classes, background included).
        channels: width of the pyramid and of its refining convolutions.
        dropout: dropout before the classifying 1x1 convolution.
    """

    def __init__(
        self, feature_info: Sequence[FeatureMap], num_classes: int, channels: int = 64, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.levels = pyramid_levels(feature_info)
        self.stride = feature_info[self.levels[0]].stride  # of the finest level read, where the logits are computed
        self.fpn = FeaturePyramidNetwork([feature_info[i].channels for i in self.levels], channels)
        self.refine = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
            for _ in self.levels
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        pyramid = self.fpn(OrderedDict((str(i), maps[level]) for i, level in enumerate(self.levels)))
        finest = None
        for refine, level in zip(self.refine, pyramid.values()):
            refined = refine(level)
            if finest is None:
                finest = refined
            else:
                finest = finest + F.interpolate(refined, size=finest.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.dropout(finest))
        return F.interpolate(logits, scale_factor=float(self.stride), mode="bilinear", align_corners=False)
