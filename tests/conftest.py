"""Shared fixtures: tiny models, a small on-disk image folder, quiet trainers. Everything offline and on CPU."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from tlkit.datamodules.digits import digit_images

TINY_BACKBONES = ["test_efficientnet", "test_resnet", "test_vit"]
#: A `tlkit fit` in seconds: a tiny random-init FineTuning on 3 digits per class, 2 epochs.
TINY_FIT_ARGS = [
    "--model=FineTuning",
    "--model.backbone=test_resnet",
    "--model.weights=null",
    "--data=DigitsDataModule",
    "--data.image_size=32",
    "--data.labels_per_class=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.max_epochs=2",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # The suite never talks to a model hub: `imagenet` for tf_efficientnet_lite0 always takes the bundled weights.
    monkeypatch.setattr("tlkit.backbones._builders.hub_reachable", lambda *a, **k: False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def write_image_folder(root: Path, classes=("0", "1", "2"), per_class: int = 12, size: int = 16) -> Path:
    """Real digit images saved as PNG files in ``root/<class>/<n>.png``."""
    images, labels = digit_images()
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        picked = [img for img, label in zip(images, labels) if str(label) == name][:per_class]
        for i, image in enumerate(picked):
            image.resize((size, size)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images")


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**defaults, **kwargs})
