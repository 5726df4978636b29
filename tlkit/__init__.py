"""tlkit: transfer learning on PyTorch Lightning.

Public API, grouped by package:
    tlkit.backbones    Backbone, the one adapter every strategy uses.
    tlkit.strategies   TransferModule and its strategies (FeatureExtraction, FineTuning, ...).
    tlkit.datamodules  ImageFolderDataModule, DigitsDataModule.
"""

__version__ = "0.1.0"

from tlkit.errors import ConfigError

__all__ = ["ConfigError", "__version__"]
