"""Backbones: one adapter over timm, torchvision and user models."""

from tlkit.backbones.adapters import Adapter
from tlkit.backbones.backbone import Backbone, LayerGroup
from tlkit.backbones.weights import efficientnet_lite0_state_dict
from tlkit.input_config import AudioConfig, DataConfig, InputConfig, TextConfig

__all__ = [
    "Adapter",
    "AudioConfig",
    "Backbone",
    "DataConfig",
    "InputConfig",
    "LayerGroup",
    "TextConfig",
    "efficientnet_lite0_state_dict",
]
