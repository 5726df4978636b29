import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import quiet_trainer
from tlkit.datamodules import DigitsDataModule
from tlkit.errors import ConfigError
from tlkit.strategies import FeatureExtraction, FineTuning, TransferModule


def random_loader(n=24, classes=4, size=32, batch_size=8):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_feature_extraction_leaves_backbone_bitwise_unchanged():
    model = FeatureExtraction("test_resnet", weights=None, num_classes=4)
    backbone_before, head_before = snapshot(model.backbone), snapshot(model.head)
    quiet_trainer(max_steps=3).fit(model, random_loader())
    assert changed(backbone_before, model.backbone) == set()  # parameters and BatchNorm running stats
    assert changed(head_before, model.head) == {"weight", "bias"}
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_fine_tuning_top_group_only_leaves_lower_groups_unchanged():
    model = FineTuning("test_resnet", weights=None, num_classes=4, trainable_groups=1)
    before = snapshot(model.backbone)
    quiet_trainer(max_steps=3).fit(model, random_loader())
    moved = changed(before, model.backbone)
    top_params = {f"model.{name}" for name in model.backbone.layer_groups[-1].parameter_names}
    assert moved & top_params, "the top group must train"
    lower = [f"model.{n}" for g in model.backbone.layer_groups[:-1] for n in g.parameter_names]
    assert not moved & set(lower)
    # Nothing outside the top group moved: no parameter and no BatchNorm statistic of a lower group.
    top_modules = tuple(name.rsplit(".", 1)[0] + "." for name in top_params)
    assert all(key.startswith(top_modules) for key in moved), sorted(moved)


def test_param_group_learning_rates_follow_lr_decay():
    model = FineTuning(
        "test_resnet",
        weights=None,
        num_classes=4,
        lr_decay=0.5,
        optimizer=lambda params: torch.optim.AdamW(params, lr=0.1),
    )
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(model, random_loader())
    groups = trainer.optimizers[0].param_groups
    names = model.backbone.group_names
    assert [g["name"] for g in groups] == names + ["head"]
    for depth, group in enumerate(reversed(groups)):
        assert group["initial_lr"] == pytest.approx(0.1 * 0.5**depth), group["name"]


def test_all_groups_exist_up_front_even_when_frozen():
    model = FineTuning("test_resnet", weights=None, num_classes=4, trainable_groups=0)
    groups = model.param_groups()
    assert [g["name"] for g in groups] == model.backbone.group_names + ["head"]
    assert model.backbone.trainable_group_names == []


def test_freeze_bn_keeps_running_stats():
    model = FineTuning("test_resnet", weights=None, num_classes=4, freeze_bn=True)
    buffers = {k: v.clone() for k, v in model.backbone.named_buffers()}
    quiet_trainer(max_steps=2).fit(model, random_loader())
    assert all(torch.equal(v, dict(model.backbone.named_buffers())[k]) for k, v in buffers.items())
    assert any(p.requires_grad for p in model.backbone.parameters())


def test_num_classes_from_datamodule_and_checkpoint_roundtrip(tmp_path):
    dm = DigitsDataModule(image_size=32, batch_size=16, labels_per_class=2, augment=False)
    model = FineTuning("test_efficientnet", weights=None, trainable_groups=1)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert model.hparams.num_classes == 10
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = FineTuning.load_from_checkpoint(path, weights=None)
    x = torch.randn(3, 3, 32, 32)
    model.eval(), restored.eval()
    assert torch.equal(model(x), restored(x))
    assert restored.backbone.trainable_group_names == model.backbone.trainable_group_names


def test_predict_returns_probabilities_and_metrics_include_top5():
    model = TransferModule("test_resnet", weights=None, num_classes=6)
    trainer = quiet_trainer(max_epochs=1)
    loader = random_loader(classes=6)
    trainer.fit(model, loader, loader)
    assert {"val/acc", "val/acc_top5", "val/f1", "val/loss"} <= set(trainer.callback_metrics)
    probabilities = torch.cat(trainer.predict(model, loader))
    assert probabilities.shape == (24, 6)
    assert torch.allclose(probabilities.sum(-1), torch.ones(24))


def test_no_top5_below_five_classes():
    model = TransferModule("test_resnet", weights=None, num_classes=3)
    assert "acc_top5" not in model.metrics["val_metrics"]


def test_mlp_head_and_label_smoothing_train():
    model = FineTuning("test_vit", weights=None, num_classes=4, head="mlp", dropout=0.2, label_smoothing=0.1)
    head_before = copy.deepcopy(model.head.state_dict())
    quiet_trainer(max_steps=2).fit(model, random_loader())
    assert changed(head_before, model.head)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (TransferModule, {"head": "conv"}, r"Expected `head` to be 'linear' or 'mlp', but got 'conv'"),
        (TransferModule, {"label_smoothing": 1.0}, r"`label_smoothing` to be in \[0, 1\)"),
        (TransferModule, {"num_classes": 1}, r"`num_classes` to be an integer >= 2"),
        (FineTuning, {"lr_decay": 0.0}, r"`lr_decay` to be in \(0, 1\], but got 0.0"),
        (FineTuning, {"trainable_groups": 9}, r"`trainable_groups` to be in \[0, 5\] for backbone 'test_resnet'"),
    ],
)
def test_bad_strategy_arguments(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls("test_resnet", weights=None, **kwargs)


def test_epoch_metrics_cover_exactly_the_last_epoch():
    # Metrics are updated every step and logged once per epoch: the logged value must be that epoch's alone.
    model = FineTuning("test_resnet", weights=None, num_classes=4)
    train, val = random_loader(n=32), random_loader(n=20, batch_size=6)  # uneven last batch
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(model, train, val)
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(x).argmax(1) for x, _ in val])
    labels = torch.cat([y for _, y in val])
    assert trainer.callback_metrics["val/acc"].item() == pytest.approx((predictions == labels).float().mean().item())
    test_acc = trainer.test(model, val, verbose=False)[0]["test/acc"]
    assert test_acc == pytest.approx((predictions == labels).float().mean().item())
