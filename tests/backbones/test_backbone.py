import pytest
import torch
from torch import nn

from tests.conftest import TINY_BACKBONES
from tlkit.backbones import Backbone, DataConfig
from tlkit.errors import ConfigError


@pytest.mark.parametrize("name", TINY_BACKBONES + ["torchvision:resnet18"])
def test_backbone_interface(name):
    backbone = Backbone(name, weights=None)
    size = backbone.data_config.image_size
    features = backbone(torch.randn(2, 3, size, size))
    assert features.shape == (2, backbone.num_features)
    assert len(backbone.layer_groups) >= 3
    # Every parameter belongs to exactly one layer group.
    grouped = [id(p) for g in backbone.layer_groups for p in g.parameters]
    assert sorted(grouped) == sorted(id(p) for p in backbone.parameters())
    assert len(set(backbone.group_names)) == len(backbone.group_names)


def test_user_module_infers_width_and_groups():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 3))
    backbone = Backbone(model=model, data_config=DataConfig(image_size=32))
    assert backbone.num_features == 5
    assert backbone.group_names == ["0", "1", "3"]
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_freeze_by_name_and_index_keeps_frozen_batchnorm_in_eval():
    backbone = Backbone("test_resnet", weights=None)
    backbone.freeze()
    backbone.unfreeze([-1])
    assert backbone.trainable_group_names == [backbone.group_names[-1]]
    backbone.train()
    first, last = backbone.layer_groups[0], backbone.layer_groups[-1]
    assert first.batch_norms and all(not bn.training for bn in first.batch_norms)
    assert last.batch_norms and all(bn.training for bn in last.batch_norms)
    backbone.unfreeze(backbone.group_names[0])
    backbone.train()
    assert all(bn.training for bn in first.batch_norms)


def test_weights_file_roundtrip_including_checkpoint_prefix(tmp_path):
    source = Backbone("test_resnet", weights=None)
    plain = tmp_path / "plain.pt"
    torch.save(source.model.state_dict(), plain)
    wrapped = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"backbone.model.{k}": v for k, v in source.model.state_dict().items()}}, wrapped)
    for path in (plain, wrapped):
        loaded = Backbone("test_resnet", weights=str(path))
        for (name, a), b in zip(source.model.state_dict().items(), loaded.model.state_dict().values()):
            assert torch.equal(a, b), name


def _shape_mismatch_file(tmp_path):
    state = Backbone("test_resnet", weights=None).model.state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "bad_shape.pt"
    torch.save(state, path)
    return str(path)


def _missing_key_file(tmp_path):
    path = tmp_path / "other_model.pt"
    torch.save(Backbone("test_efficientnet", weights=None).model.state_dict(), path)
    return str(path)


def _not_a_state_dict(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    return str(path)


@pytest.mark.parametrize(
    ("name", "weights", "match"),
    [
        ("resnet5", None, r"Expected `backbone` to be a timm model name.*'resnet5'.*Closest: .*resnet50"),
        ("torchvision:resnet1", None, r"torchvision classification model.*Closest: torchvision:resnet18"),
        ("test_resnet", "no/such/file.pt", r"'no/such/file.pt': no such file"),
        ("test_resnet", _shape_mismatch_file, r"bad_shape.pt.*key 'layer1.0.conv1.weight' has shape \(1, 1, 1, 1\)"),
        ("test_resnet", _missing_key_file, r"other_model.pt.*key 'conv1.0.weight' is missing"),
        ("test_resnet", _not_a_state_dict, r"safetensors state dict, but got '.*notes.pt \(unreadable"),
    ],
)
def test_bad_backbone_input(tmp_path, name, weights, match):
    if callable(weights):
        weights = weights(tmp_path)
    with pytest.raises(ConfigError, match=match):
        Backbone(name, weights=weights)


def test_unknown_group_lists_valid_names():
    backbone = Backbone("test_resnet", weights=None)
    with pytest.raises(ConfigError, match=r"but got 'layer9'.*Valid names: .*layer"):
        backbone.freeze("layer9")
    with pytest.raises(ConfigError, match=r"an index in \[-5, 4\]"):
        backbone.freeze(7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["16-true", "bf16-true"])
def test_the_input_size_check_runs_in_the_weights_precision(dtype):
    # Under `--trainer.precision 16-true` the model is half precision when the check runs: a float32 probe image
    # failed on the dtype, and was reported as a bad image_size.
    backbone = Backbone("test_resnet", weights=None).to(dtype)
    backbone.check_input_size(32)
    with pytest.raises(ConfigError, match=r"`image_size` to be a size 'vit_tiny_patch16_224' accepts .*got 48"):
        Backbone("vit_tiny_patch16_224", weights=None).to(dtype).check_input_size(48)
