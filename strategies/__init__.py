"""Strategies: one LightningModule per transfer technique, all sharing `tlkit.backbones.Backbone`."""

from tlkit.strategies.feature_extraction import FeatureExtraction
from tlkit.strategies.fine_tuning import FineTuning
from tlkit.strategies.transfer_module import TransferModule

__all__ = ["FeatureExtraction", "FineTuning", "TransferModule"]
