"""tlkit: transfer learning on PyTorch Lightning.

Public API, grouped by package:
    tlkit.backbones    Backbone, the one adapter every strategy uses.
    tlkit.strategies   TransferModule and its strategies (FeatureExtraction, FineTuning, ...).
    tlkit.datamodules  ImageFolderDataModule, DigitsDataModule.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout, strategies/ and datamodules/ sit beside tlkit/; an install maps them into tlkit through
# setuptools' package-dir. Searching the checkout's root as part of this package makes `tlkit.strategies` resolve the
# same way when Python runs from the repository root without an install.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "strategies" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (``__path__`` is defined for packages)

from tlkit.errors import ConfigError  # noqa: E402

__all__ = ["ConfigError", "__version__"]
