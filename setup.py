"""Package discovery for the one layout pyproject.toml cannot express alone.

strategies/ and datamodules/ live at the top of the repository but install inside the tlkit namespace (there is
already an unrelated `strategies` package on PyPI, so they must never become top-level packages). Every package
under each root is found automatically, so a new sub-package can never be left out of the wheel. All other metadata
is in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {"tlkit": "tlkit", "tlkit.strategies": "strategies", "tlkit.datamodules": "datamodules"}

packages = []
for name, folder in ROOTS.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

# Data files inside the packages: the recorded voices VoicesDataModule reads (with their attribution) and the
# synthetic ones VoicesDomainDataModule adapts from (with how they were made).
PACKAGE_DATA = {
    "tlkit.datamodules": [
        "data/voices/*/*.flac",
        "data/voices/*.md",
        "data/synthetic_voices/*/*.flac",
        "data/synthetic_voices/*.md",
    ]
}

setup(packages=packages, package_dir=ROOTS, package_data=PACKAGE_DATA)
