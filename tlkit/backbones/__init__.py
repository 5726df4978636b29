"""Backbones: one adapter over timm, torchvision and user models."""

from tlkit.backbones._builders import DataConfig
from tlkit.backbones.backbone import Backbone, LayerGroup
from tlkit.backbones.weights import efficientnet_lite0_state_dict

__all__ = ["Backbone", "DataConfig", "LayerGroup", "efficientnet_lite0_state_dict"]
