"""What a datamodule learns from the model it is trained with: the backbone's data config and its wishes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lightning.pytorch import LightningDataModule

from tlkit.backbones import Backbone, DataConfig


def attached_model(datamodule: LightningDataModule) -> Any:
    """The LightningModule the datamodule is being used with, or None outside a Trainer."""
    trainer = datamodule.trainer
    return getattr(trainer, "lightning_module", None) if trainer is not None else None


def resolve_data_config(datamodule: Any) -> DataConfig:
    """The datamodule's own ``data_config``, else the attached backbone's, else ImageNet defaults; then the
    datamodule's ``image_size``/``crop_pct`` overrides."""
    backbone = getattr(attached_model(datamodule), "backbone", None)
    config = datamodule.data_config or getattr(backbone, "data_config", None) or DataConfig()
    hp = datamodule.hparams
    resolved = replace(
        config,
        image_size=hp.image_size or config.image_size,
        crop_pct=hp.crop_pct if hp.crop_pct is not None else config.crop_pct,
    )
    if isinstance(backbone, Backbone):
        backbone.check_input_size(resolved.image_size)  # before training, not as a shape error in the first step
    return resolved
