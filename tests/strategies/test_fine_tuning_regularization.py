"""FineTuning's L2-SP and BSS options: the penalties, their logs, weight decay and their place in checkpoints."""

from __future__ import annotations

import pytest
import torch

from tests.callbacks._helpers import NUM_CLASSES, loaders, max_difference, trainer
from tests.conftest import quiet_trainer
from tlkit.errors import ConfigError
from tlkit.functional import batch_spectral_shrinkage
from tlkit.strategies import FineTuning
from tlkit.strategies.regularization import BSS, L2SP


def _model(**kwargs) -> FineTuning:
    torch.manual_seed(0)
    return FineTuning("test_resnet", weights=None, num_classes=NUM_CLASSES, **kwargs)


def test_l2_sp_is_zero_at_the_start_and_pulls_toward_it_with_the_formula_gradient():
    model = _model(l2_sp=L2SP(alpha=0.3, beta=0.0))
    features = torch.randn(4, model.backbone.num_features)
    assert model.regularization(features)["l2_sp"].item() == 0.0
    start = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.regularization(features)["l2_sp"].backward()
    for name, p in model.backbone.named_parameters():
        torch.testing.assert_close(p.grad, 0.3 * (p.detach() - start[name]))


def test_l2_sp_beta_is_plain_l2_on_the_head_and_replaces_weight_decay():
    model = _model(l2_sp=L2SP(alpha=0.0, beta=0.5))
    expected = 0.5 * 0.5 * sum(p.pow(2).sum() for p in model.head.parameters())
    torch.testing.assert_close(model.regularization(torch.randn(2, model.backbone.num_features))["l2_sp"], expected)
    assert {g["weight_decay"] for g in model.param_groups()} == {0.0}
    assert all("weight_decay" not in g for g in _model().param_groups())


def test_l2_sp_pulls_only_trainable_groups():
    model = _model(l2_sp=L2SP(alpha=1.0, beta=0.0), trainable_groups=1)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    expected = 0.5 * sum(p.numel() for p in model.backbone.layer_groups[-1].parameters)
    penalty = model.regularization(torch.randn(2, model.backbone.num_features))["l2_sp"]
    assert penalty.item() == pytest.approx(expected)


def test_bss_penalty_is_its_weight_times_the_spectral_term():
    model = _model(bss=BSS(weight=0.2, k=2))
    features = torch.randn(8, model.backbone.num_features)
    torch.testing.assert_close(model.regularization(features)["bss"], 0.2 * batch_spectral_shrinkage(features, 2))


def test_penalties_are_logged_as_their_own_loss_terms_and_added_to_the_loss(tmp_path):
    model = _model(l2_sp=L2SP(alpha=0.5), bss=BSS(weight=0.1))
    train, val = loaders(n=16)
    fit = quiet_trainer(max_epochs=2, default_root_dir=tmp_path)
    fit.fit(model, train, val)
    logged = fit.logged_metrics
    assert {"train/l2_sp_step", "train/bss_step", "train/loss_step"} <= set(logged)
    assert logged["train/l2_sp_step"] > 0 and logged["train/bss_step"] > 0


def test_starting_point_is_in_checkpoints_so_resume_pulls_toward_the_same_weights(tmp_path):
    train, val = loaders()
    reference = _model(l2_sp=L2SP(alpha=1.0))
    start = {k: v.clone() for k, v in reference.state_dict().items() if k.startswith("starting_point.")}
    assert start
    fit = trainer(tmp_path, [], max_epochs=2)
    fit.fit(reference, train, val)
    fit.save_checkpoint(tmp_path / "run.ckpt")
    loaded = FineTuning.load_from_checkpoint(tmp_path / "run.ckpt", weights=None)
    assert loaded.l2_sp == L2SP(alpha=1.0) and max_difference(start, {k: loaded.state_dict()[k] for k in start}) == 0
    hparams = torch.load(tmp_path / "run.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["l2_sp"] == {"alpha": 1.0, "beta": 0.01} and hparams["bss"] is None


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: L2SP(alpha=-1), "l2_sp.alpha"),
        (lambda: L2SP(beta=-1), "l2_sp.beta"),
        (lambda: BSS(weight=-1), "bss.weight"),
        (lambda: BSS(k=0), "bss.k"),
    ],
)
def test_bad_regularizer_values_are_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_training_loss_is_the_task_loss_plus_every_penalty():
    model = _model(l2_sp=L2SP(alpha=0.5, beta=0.5), bss=BSS(weight=0.1))
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.01)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4) % NUM_CLASSES
    loss = model.training_step((x, y), 0)
    features = model.backbone(x)
    penalties = model.regularization(features)
    expected = model.loss(model.head(features), y) + penalties["l2_sp"] + penalties["bss"]
    assert penalties["l2_sp"] > 0 and penalties["bss"] > 0
    torch.testing.assert_close(loss, expected)
