"""What a datamodule learns from the model it is trained with: the model's `DataRequest`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lightning.pytorch import LightningDataModule

from tlkit.backbones import AudioConfig, DataConfig, TextConfig
from tlkit.data_request import DataRequest
from tlkit.errors import ConfigError
from tlkit.protocols import RequestsData


def model_request(datamodule: LightningDataModule) -> DataRequest:
    """The attached model's request, or an empty one outside a Trainer or with a model that makes none."""
    trainer = datamodule.trainer
    model = trainer.lightning_module if trainer is not None else None
    return model.data_request() if isinstance(model, RequestsData) else DataRequest()


def resolve_data_config(datamodule: Any, request: DataRequest | None = None) -> DataConfig:
    """The datamodule's own ``data_config``, else the backbone's (from ``request``, by default the attached model's),
    else ImageNet defaults; then the datamodule's ``image_size``/``crop_pct`` overrides, checked against the backbone
    before training."""
    request = request if request is not None else model_request(datamodule)
    if isinstance(request.input_config, (TextConfig, AudioConfig)):
        kind = "text" if isinstance(request.input_config, TextConfig) else "audio"
        raise ConfigError(
            f"Expected an image backbone for {type(datamodule).__name__}, but the model's backbone reads {kind} "
            f"(its input config is a {type(request.input_config).__name__}): use a {kind} datamodule, or an image "
            "backbone."
        )
    config = datamodule.data_config or request.input_config or DataConfig()
    hp = datamodule.hparams
    resolved = replace(
        config,
        image_size=config.image_size if hp.image_size is None else hp.image_size,
        crop_pct=hp.crop_pct if hp.crop_pct is not None else config.crop_pct,
    )
    if request.check_image_size is not None:
        request.check_image_size(resolved.image_size)  # before training, not as a shape error in the first step
    return resolved
