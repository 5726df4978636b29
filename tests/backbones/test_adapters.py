"""peft adapters on the backbone: what trains, where adapter parameters are grouped, merging, adapter-only
checkpoints and exact resume."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from timm.layers import Conv2dSame
from torch import nn

from tests.callbacks._helpers import NUM_CLASSES, loaders, max_difference, model, trainer
from tests.conftest import TINY_BACKBONES, quiet_trainer
from tlkit.backbones import Adapter, Backbone
from tlkit.callbacks import LRWarmup, ProgressiveUnfreezing
from tlkit.errors import ConfigError
from tlkit.strategies import FineTuning

METHODS = ["lora", "dora", "loha", "lokr"]


def _images(backbone: Backbone, n: int = 4) -> torch.Tensor:
    size = backbone.data_config.image_size if "vit" in backbone.name else 32
    return torch.randn(n, 3, size, size)


def _fit(model: FineTuning, images: torch.Tensor, steps: int = 3) -> None:
    labels = torch.arange(len(images)) % NUM_CLASSES
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=len(images))
    quiet_trainer(max_steps=steps, num_sanity_val_steps=0).fit(model, data)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", TINY_BACKBONES)
def test_only_adapters_and_head_train_and_merging_keeps_the_outputs(name, method):
    net = FineTuning(name, weights=None, num_classes=NUM_CLASSES, adapter=Adapter(method=method, rank=4))
    images = _images(net.backbone)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _fit(net, images)
    changed = {k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])}
    statistics = {k for k in changed if "running_" in k}  # BatchNorm statistics follow the data, as in FineTuning
    adapter_keys = {k for k in changed - statistics if k.startswith("backbone.")}
    assert adapter_keys and not any(".base_layer." in k for k in adapter_keys)
    assert all(("lora_" in k or "hada_" in k or "lokr_" in k) for k in adapter_keys)
    assert {k for k in changed - statistics - adapter_keys} == {k for k in before if k.startswith("head.")}
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable < 0.5 * sum(p.numel() for p in net.parameters())

    net.eval()
    with torch.no_grad():
        adapted = net(images)
        net.backbone.merge_adapter()
        merged = net(images)
    assert not any("base_layer" in k or "lora_" in k for k in net.state_dict())
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)


def test_adapter_parameters_stay_in_the_group_of_the_layer_they_adapt():
    backbone = Backbone("test_resnet", weights=None)
    groups_before = {g.name: {n.rpartition(".")[0] for n in g.parameter_names} for g in backbone.layer_groups}
    backbone.add_adapter(Adapter(rank=2))
    for group in backbone.layer_groups:
        assert group.parameter_names, group.name
        for name in group.parameter_names:
            adapted_layer = name.split(".lora_")[0]
            assert adapted_layer in groups_before[group.name], name
    # Discriminative learning rates reach the adapters: each optimizer group holds its layer group's adapters.
    net = FineTuning(Backbone("test_resnet", weights=None), num_classes=3, adapter=Adapter(rank=2), lr_decay=0.5)
    groups = {g["name"]: g for g in net.param_groups()}
    assert groups["layer1.0"]["lr_scale"] == 0.5**4 and all(p.requires_grad for p in groups["layer1.0"]["params"])
    assert len(groups["layer1.0"]["params"]) == len(net.backbone.layer_groups[1].parameters)


def test_frozen_groups_freeze_their_adapters():
    net = FineTuning("test_resnet", weights=None, num_classes=3, adapter=Adapter(rank=2), trainable_groups=1)
    assert net.backbone.trainable_group_names == ["layer4.0"]
    trainable = [n for n, p in net.backbone.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.layer4.") and "lora_" in n for n in trainable)


@pytest.mark.parametrize(
    ("method", "marker"), [("lora", ".lora_"), ("dora", ".lora_"), ("loha", ".hada_"), ("lokr", ".lokr_")]
)
def test_default_targets_leave_out_grouped_convolutions_and_self_padding_ones(method, marker):
    custom = nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(), nn.Conv2d(8, 16, 1)
    )
    backbone = Backbone(model=custom, num_features=16)
    backbone.add_adapter(Adapter(method=method, rank=2))
    assert {n.split(marker)[0] for g in backbone.layer_groups for n in g.parameter_names} == {"4"}
    assert backbone(torch.randn(2, 3, 15, 15)).shape == (2, 16)


def test_a_self_padding_convolution_named_as_target_is_refused_with_the_reason():
    model = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 1))
    backbone = Backbone(model=model, num_features=16)
    with pytest.raises(ConfigError, match=r"'0' matches none \(it matches 0, which lora cannot wrap\)"):
        backbone.add_adapter(Adapter(method="lora", rank=2, target_modules=["0"]))


@pytest.mark.parametrize(
    ("adapter", "match"),
    [
        (Adapter(target_modules=["qvk"]), r"'qvk' matches none\. Names that would: qkv"),
        (Adapter(target_modules=["blocks.0.attn"]), r"it matches blocks\.0\.attn, which lora cannot wrap"),
        (Adapter(target_modules=[r"blocks\.9\..*"]), r"Names that would: blocks\.5\.mlp\.fc2"),
    ],
)
def test_a_target_that_matches_nothing_names_the_modules_that_would(adapter, match):
    with pytest.raises(ConfigError, match=match):
        Backbone("test_vit", weights=None).add_adapter(adapter)


def test_targets_match_whole_names_or_their_end_as_in_peft():
    backbone = Backbone("test_vit", weights=None)
    backbone.add_adapter(Adapter(rank=2, target_modules=["qkv", r"blocks\.5\.mlp\.fc2"]))
    adapted = {n.split(".lora_")[0] for g in backbone.layer_groups for n in g.parameter_names}
    assert adapted == {f"blocks.{i}.attn.qkv" for i in range(6)} | {"blocks.5.mlp.fc2"}


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(method="ia3"), "adapter.method"),
        (dict(rank=0), "adapter.rank"),
        (dict(dropout=1.0), "adapter.dropout"),
        (dict(target_modules=["("]), "adapter.target_modules"),
        (dict(checkpoint="some"), "adapter.checkpoint"),
    ],
)
def test_bad_adapter_fields_are_config_errors(fields, match):
    with pytest.raises(ConfigError, match=match):
        Adapter(**fields)


def test_adapter_only_checkpoints_hold_no_pretrained_weight_and_load_back(tmp_path):
    weights = tmp_path / "pretrained.pt"
    torch.save(Backbone("test_resnet", weights=None).model.state_dict(), weights)
    adapter = Adapter(rank=2, checkpoint="adapter_only")
    net = FineTuning("test_resnet", weights=str(weights), num_classes=NUM_CLASSES, adapter=adapter)
    train, _ = loaders(n=8)
    fit = quiet_trainer(max_steps=2, default_root_dir=tmp_path)
    fit.fit(net, train)
    fit.save_checkpoint(tmp_path / "small.ckpt")
    full = FineTuning("test_resnet", weights=str(weights), num_classes=NUM_CLASSES, adapter=Adapter(rank=2))
    full.load_state_dict(net.state_dict())
    quiet_trainer(max_steps=0).fit(full, train)  # attaches a trainer so save_checkpoint works
    full.trainer.save_checkpoint(tmp_path / "full.ckpt")
    small_state = torch.load(tmp_path / "small.ckpt", weights_only=True)["state_dict"]
    assert not any(k.endswith("base_layer.weight") for k in small_state)
    assert (tmp_path / "small.ckpt").stat().st_size < 0.5 * (tmp_path / "full.ckpt").stat().st_size

    loaded = FineTuning.load_from_checkpoint(tmp_path / "small.ckpt")
    assert max_difference(net.state_dict(), loaded.state_dict()) == 0.0

    torch.save(Backbone("test_resnet", weights=None).model.state_dict(), weights)  # other pretrained weights
    with pytest.raises(ConfigError, match="differ; load it with the same `weights`"):
        FineTuning.load_from_checkpoint(tmp_path / "small.ckpt")


def test_adapter_only_needs_rebuildable_pretrained_weights():
    with pytest.raises(ConfigError, match="adapter.checkpoint"):
        FineTuning("test_resnet", weights=None, num_classes=3, adapter=Adapter(checkpoint="adapter_only"))


def test_resume_with_adapters_is_bitwise_identical(tmp_path):
    # Gradual unfreezing over the adapters, warm-up, augmentation and adapter dropout: all must resume exactly.
    adapter = Adapter(rank=4, dropout=0.2)
    train, val = loaders(augment=True)
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)

    def callbacks():
        return [ProgressiveUnfreezing(every_n_epochs=1, groups_per_step=2), LRWarmup(duration=6)]

    reference = model(adapter=adapter)
    trainer(tmp_path, [*callbacks(), every_epoch], max_epochs=4).fit(reference, train, val)
    expected = {k: v.clone() for k, v in reference.state_dict().items()}
    resumed = model(adapter=adapter)
    trainer(tmp_path / "resumed", callbacks(), max_epochs=4).fit(
        resumed, train, val, ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt"
    )
    assert max_difference(expected, resumed.state_dict()) == 0.0
