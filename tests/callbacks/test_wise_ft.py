"""WiSE-FT: exact endpoints, what is interpolated after a plain fine-tune and after a linear probe, the selection,
the saved checkpoint and resume."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from tests.callbacks._helpers import loaders, max_difference, model, trainer
from tlkit.callbacks import ProgressiveUnfreezing, WiSEFT
from tlkit.errors import ConfigError
from tlkit.functional.weight_interpolation import interpolate_state, select_alpha
from tlkit.strategies import FeatureExtraction


def _states(n: int = 2) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"w": torch.randn(5, 3, generator=g), "bn.running_var": torch.rand(3, generator=g), "bn.count": torch.tensor(i)}
        for i in range(n)
    ]


def test_coefficients_zero_and_one_are_exactly_the_two_models():
    reference, fine_tuned = _states()
    for key in ("w", "bn.running_var"):
        assert torch.equal(interpolate_state(reference, fine_tuned, 0.0)[key], reference[key])
        assert torch.equal(interpolate_state(reference, fine_tuned, 1.0)[key], fine_tuned[key])
    half = interpolate_state(reference, fine_tuned, 0.5)
    torch.testing.assert_close(half["w"], (reference["w"] + fine_tuned["w"]) / 2)
    assert half["bn.count"] is fine_tuned["bn.count"]  # integer entries keep the fine-tuned value
    only_w = interpolate_state(reference, fine_tuned, 0.0, keys=["w"])
    assert torch.equal(only_w["bn.running_var"], fine_tuned["bn.running_var"])


def test_select_alpha_keeps_the_best_and_breaks_ties_toward_the_reference():
    net = torch.nn.Linear(1, 1, bias=False)
    reference = {"weight": torch.zeros(1, 1)}
    with torch.no_grad():
        net.weight.fill_(1.0)
    # Score peaks (flat) at weights 0.4 and 0.6: the smaller coefficient wins the tie.
    curve = select_alpha(net, reference, lambda m: -abs(abs(m.weight.item() - 0.5) - 0.1), [0.0, 0.4, 0.6, 1.0])
    assert curve.best_alpha == 0.4 and net.weight.item() == pytest.approx(0.4)
    assert curve.scores[0] == pytest.approx(-0.4)


def _fit_with_wise_ft(tmp_path, callbacks, alphas=(0.0, 0.5, 1.0), **kwargs):
    train, val = loaders()
    wise = WiSEFT(alphas=alphas)
    net = model(**kwargs)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit = trainer(tmp_path, [*callbacks, wise, checkpoints], max_epochs=3, logger=CSVLogger(tmp_path))
    fit.fit(net, train, val)
    return net, wise, start, fit


def test_after_a_plain_fine_tune_only_the_backbone_is_interpolated(tmp_path):
    net, wise, start, _ = _fit_with_wise_ft(tmp_path, [], alphas=[0.0])
    assert wise.scope == "backbone"
    state = net.state_dict()
    backbone_floats = [k for k in start if k.startswith("backbone.") and start[k].is_floating_point()]
    assert max_difference({k: start[k] for k in backbone_floats}, {k: state[k] for k in backbone_floats}) == 0.0
    assert not torch.equal(state["head.weight"], start["head.weight"])  # the fine-tuned head, not its random init


class _StateAtEpochEnd(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch, self.state = epoch, None

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            self.state = {k: v.clone() for k, v in pl_module.state_dict().items() if v.is_floating_point()}


def test_after_a_linear_probe_the_reference_is_its_end_and_the_whole_model_interpolates(tmp_path):
    probe_end = _StateAtEpochEnd(1)  # the backbone starts training at epoch 2
    net, wise, _, _ = _fit_with_wise_ft(tmp_path, [ProgressiveUnfreezing(milestones={2: "all"}), probe_end], [0.0])
    assert wise.scope == "model"
    assert max_difference(probe_end.state, {k: net.state_dict()[k] for k in probe_end.state}) == 0.0


def test_the_chosen_model_is_the_best_on_validation_logged_and_saved(tmp_path):
    net, wise, _, fit = _fit_with_wise_ft(tmp_path, [], alphas=[0.0, 0.5, 1.0])
    assert wise.curve is not None and wise.curve.best_score == max(wise.curve.scores)
    saved = torch.load(tmp_path / "ckpt" / "wise_ft.ckpt", weights_only=True)["state_dict"]
    assert max_difference(saved, net.state_dict()) == 0.0
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert wise.curve.best_alpha == 1.0 or max_difference(last, net.state_dict()) > 0  # last.ckpt left as it was
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "wise_ft/val_acc" in metrics


def test_the_reference_survives_a_resume(tmp_path):
    train, val = loaders()
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    first = WiSEFT(alphas=[0.0])
    trainer(tmp_path, [first, every_epoch], max_epochs=3).fit(model(), train, val)
    resumed_wise, resumed = WiSEFT(alphas=[0.0]), model()
    trainer(tmp_path / "resumed", [resumed_wise], max_epochs=3).fit(
        resumed, train, val, ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt"
    )
    assert resumed_wise.scope == "backbone"
    assert max_difference(first.reference, resumed_wise.reference) == 0.0


def test_refuses_a_model_whose_backbone_never_trains(tmp_path):
    train, val = loaders()
    frozen = FeatureExtraction("test_resnet", weights=None, num_classes=4)
    with pytest.raises(ConfigError, match="whose backbone trains for WiSEFT"):
        trainer(tmp_path, [WiSEFT()], max_epochs=1).fit(frozen, train, val)


@pytest.mark.parametrize(
    ("kwargs", "match"), [(dict(alphas=[]), "alphas"), (dict(alphas=[1.5]), "alphas"), (dict(filename="x.pt"), "file")]
)
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WiSEFT(**kwargs)
