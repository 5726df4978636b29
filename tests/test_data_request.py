"""The model-data contract: a model states what it needs in a `DataRequest`; datamodules serve it, nothing else."""

import dataclasses

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate

from tlkit.backbones import Backbone, DataConfig, TextConfig
from tlkit.data_request import DataRequest, Features
from tlkit.datamodules import DigitsDataModule, DigitsMDataModule
from tlkit.errors import ConfigError
from tlkit.features import FeatureCache, FeatureServing, ServedFeatures
from tlkit.strategies import DANN, FeatureExtraction, FineTuning, SelfTraining


class Attached:
    """The smallest stand-in for a Trainer: what a datamodule reads of it."""

    def __init__(self, model):
        self.lightning_module = model


def attach(datamodule, model):
    datamodule.trainer = Attached(model)
    return datamodule


def test_each_strategy_states_its_needs():
    fine_tuning = FineTuning("test_resnet", weights=None, num_classes=3).data_request()
    assert fine_tuning.input_config == Backbone("test_resnet", weights=None).data_config
    assert fine_tuning.target_views == "single" and not fine_tuning.source_free
    assert SelfTraining("test_resnet", weights=None).data_request().target_views == "weak_strong"
    assert DANN("test_resnet", weights=None).data_request().target_views == "single"


def test_datamodule_reads_transforms_and_target_views_from_the_request():
    model = SelfTraining("test_resnet", weights=None)
    dm = attach(DigitsMDataModule(image_size=32, batch_size=4), model)
    dm.setup()
    assert dm.resolve_data_config().mean == model.backbone.data_config.mean
    weak, strong = dm.train_dataloader().iterables["target"].dataset[0]
    assert weak.shape == strong.shape and not torch.equal(weak, strong)


class CustomInput(FineTuning):
    """Research code: a strategy that asks for its own input size and normalisation."""

    def data_request(self) -> DataRequest:
        return dataclasses.replace(super().data_request(), input_config=DataConfig(image_size=40, mean=(0.5,) * 3))


def test_a_subclass_changes_what_it_asks_for_without_touching_the_datamodule():
    dm = attach(DigitsDataModule(image_size=None, batch_size=4), CustomInput("test_resnet", weights=None))
    dm.setup()
    assert dm.resolve_data_config() == DataConfig(image_size=40, mean=(0.5,) * 3, crop_pct=1.0)
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape[-2:] == (40, 40)


def test_model_without_a_request_gets_the_datamodules_defaults():
    dm = attach(DigitsDataModule(image_size=None), nn.Linear(2, 2))
    assert dm.resolve_data_config() == DataConfig(crop_pct=1.0)


def test_a_text_backbone_with_an_image_datamodule_is_one_clear_error():
    class TextModel(FineTuning):
        def data_request(self) -> DataRequest:
            return DataRequest(input_config=TextConfig(tokenizer=str.split, max_length=64))

    dm = attach(DigitsDataModule(), TextModel("test_resnet", weights=None))
    with pytest.raises(ConfigError, match=r"image backbone for DigitsDataModule.*reads text"):
        dm.resolve_data_config()


def test_the_request_checks_the_image_size_before_training():
    dm = attach(DigitsDataModule(image_size=8), FineTuning("test_vit", weights=None))
    with pytest.raises(ConfigError, match=r"`image_size` to be a size 'test_vit' accepts.*got 8"):
        dm.resolve_data_config()


def test_features_keep_their_type_through_collation_and_device_transfer():
    samples = [(Features(torch.full((3,), float(i))), i) for i in range(4)]
    features, labels = default_collate(samples)
    assert isinstance(features, Features) and features.values.shape == (4, 3)
    moved = move_data_to_device((features, labels), torch.device("cpu"))
    assert isinstance(moved[0], Features) and torch.equal(moved[0].values, features.values)


def test_a_backbone_that_takes_2d_input_is_never_mistaken_for_served_features():
    """Tabular input is (N, D), as features are; only the `Features` type bypasses the backbone."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16))
    model = FineTuning(Backbone(model=mlp, num_features=16), num_classes=3)
    x = torch.randn(5, 8)
    assert torch.allclose(model(x), model.head(mlp(x)))
    served = torch.randn(5, 16)
    assert torch.equal(model(Features(served)), model.head(served))


def test_served_features_switch_back_to_images_in_place():
    backbone = Backbone("test_resnet", weights=None).eval()
    images = TensorDataset(torch.randn(6, 3, 32, 32), torch.arange(6))
    serving = FeatureServing(FeatureCache("memory"), backbone)
    dataset = serving.dataset(images, data_key="six", transform="none")
    values, label = dataset[2]
    assert isinstance(values, Features) and label == 2
    with torch.no_grad():
        assert torch.allclose(values.values, backbone(images[2][0][None])[0], atol=1e-5)
    loader = DataLoader(dataset, batch_size=3)  # built while serving, as Lightning builds it
    serving.set_active(False)
    batch, _ = next(iter(loader))
    assert torch.equal(batch, images.tensors[0][:3])
    # Off from the start (resumed after the head-only phase): no features are computed at all.
    assert serving.dataset(images, data_key="six-b", transform="none") is images


def test_a_frozen_backbone_hands_its_features_to_the_datamodule_and_each_run_starts_without(tmp_path):
    """Feature serving reaches the datamodule through its protocol (`ServesFeatures`), not through the model's
    request: FeatureExtraction hands it in at setup, and a later run of the same datamodule serves images again."""
    dm = DigitsDataModule(image_size=32, batch_size=8, labels_per_class=2)
    short = dict(max_steps=1, limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    L.Trainer(default_root_dir=tmp_path, **short).fit(FeatureExtraction("test_resnet", weights=None), datamodule=dm)
    assert isinstance(dm.feature_serving, FeatureServing) and dm.feature_serving.active
    assert isinstance(dm.dataset("train", train=False), ServedFeatures)
    L.Trainer(default_root_dir=tmp_path, **short).fit(FineTuning("test_resnet", weights=None), datamodule=dm)
    assert dm.feature_serving is None and not isinstance(dm.dataset("train", train=False), ServedFeatures)
