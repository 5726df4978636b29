"""Strategies: one LightningModule per transfer technique, all sharing `tlkit.backbones.Backbone`."""

from tlkit.strategies.adversarial import CDAN, DANN
from tlkit.strategies.discrepancy import DAN, DeepCORAL
from tlkit.strategies.domain_adaptation import DomainAdaptation
from tlkit.strategies.domain_module import DomainModule, SourceOnly
from tlkit.strategies.feature_extraction import FeatureExtraction
from tlkit.strategies.fine_tuning import FineTuning
from tlkit.strategies.joint_training import JointTraining
from tlkit.strategies.mcc import MCC
from tlkit.strategies.mme import MME
from tlkit.strategies.self_training import SelfTraining
from tlkit.strategies.shot import SHOT
from tlkit.strategies.transfer_module import TransferModule

__all__ = [
    "CDAN",
    "DAN",
    "DANN",
    "DeepCORAL",
    "DomainAdaptation",
    "DomainModule",
    "FeatureExtraction",
    "FineTuning",
    "JointTraining",
    "MCC",
    "MME",
    "SHOT",
    "SelfTraining",
    "SourceOnly",
    "TransferModule",
]
