"""Callbacks that change which layer groups train and how fast, resumable and DDP-safe; and safe checkpoints."""

from tlkit.callbacks.embedding_projector import EmbeddingProjector
from tlkit.callbacks.graceful_stop import GracefulStop
from tlkit.callbacks.learning_rates import LearningRates
from tlkit.callbacks.lr_warmup import LRWarmup
from tlkit.callbacks.prediction_writer import PredictionWriter
from tlkit.callbacks.progressive_unfreezing import ProgressiveUnfreezing
from tlkit.callbacks.resumable_checkpoint import ResumableCheckpoint
from tlkit.callbacks.tensorboard_report import TensorBoardReport
from tlkit.callbacks.trial_pruning import TrialPruning
from tlkit.callbacks.wise_ft import WiSEFT

__all__ = [
    "EmbeddingProjector",
    "GracefulStop",
    "LRWarmup",
    "LearningRates",
    "PredictionWriter",
    "ProgressiveUnfreezing",
    "ResumableCheckpoint",
    "TensorBoardReport",
    "TrialPruning",
    "WiSEFT",
]
