import logging

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.callbacks._helpers import loaders, model, trainer
from tlkit.callbacks import ProgressiveUnfreezing
from tlkit.errors import ConfigError
from tlkit.strategies import FeatureExtraction, FineTuning

GROUPS = ["conv1+bn1", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]  # test_resnet, input to output


class RecordTrainable(Callback):
    """Trainable groups seen by each epoch (after ProgressiveUnfreezing ran, as it comes first in the list)."""

    def __init__(self):
        self.by_epoch = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.by_epoch.append(pl_module.backbone.trainable_group_names)


def fit(tmp_path, unfreezing, epochs, **kwargs):
    record = RecordTrainable()
    net = model(**kwargs)
    train, val = loaders()
    trainer(tmp_path, [unfreezing, record], max_epochs=epochs).fit(net, train, val)
    return net, record.by_epoch


def test_gradual_schedule(tmp_path):
    _, seen = fit(tmp_path, ProgressiveUnfreezing(every_n_epochs=2, groups_per_step=2, initial_groups=1), epochs=6)
    assert seen == [GROUPS[4:]] * 2 + [GROUPS[2:]] * 2 + [GROUPS] * 2


def test_milestones_by_index_name_and_regex(tmp_path):
    milestones = {1: [-1], 2: ["layer3.0"], 3: [r"^layer1\.0\.bn"]}
    net, seen = fit(tmp_path, ProgressiveUnfreezing(milestones=milestones), epochs=4)
    assert seen == [[], ["layer4.0"], ["layer3.0", "layer4.0"], ["layer1.0", "layer3.0", "layer4.0"]]
    # The regex unfroze only layer1's BatchNorm parameters, not its convolutions.
    assert all(p.requires_grad == (".bn" in n) for n, p in net.backbone.model.layer1.named_parameters())


def test_lp_ft_is_head_only_then_everything(tmp_path):
    _, seen = fit(tmp_path, ProgressiveUnfreezing(milestones={2: "all"}), epochs=3)
    assert seen == [[], [], GROUPS]


@pytest.mark.parametrize(
    ("patience", "cap", "expected"),
    [(100, 2, [0, 0, 1, 1, 2, 2]), (0, None, [0, 1, 2, 3, 4, 5])],
    ids=["cap", "patience"],
)
def test_plateau_moves_on_after_patience_or_cap(tmp_path, patience, cap, expected):
    unfreezing = ProgressiveUnfreezing(monitor="val/acc", mode="max", patience=patience, max_epochs_per_phase=cap)
    _, seen = fit(tmp_path, unfreezing, epochs=6)
    assert [len(groups) for groups in seen] == expected


def test_frozen_weights_get_no_update_from_weight_decay_or_momentum(tmp_path):
    net, _ = fit(tmp_path, ProgressiveUnfreezing(milestones={5: "all"}), epochs=2, weight_decay=0.5)
    fresh = model()
    for (name, before), after in zip(fresh.backbone.state_dict().items(), net.backbone.state_dict().values()):
        assert torch.equal(before, after), name  # parameters and BatchNorm statistics alike
    assert not torch.equal(fresh.head.weight, net.head.weight)
    assert all(not bn.training for g in net.backbone.layer_groups for bn in g.batch_norms)


def test_phase_changes_are_logged_and_printed(tmp_path, caplog):
    net = model()
    train, val = loaders()
    logger = TensorBoardLogger(tmp_path, name="tb")
    with caplog.at_level(logging.INFO):
        trainer(tmp_path, [ProgressiveUnfreezing(every_n_epochs=1)], max_epochs=3, logger=logger).fit(net, train, val)
    assert "epoch 1, phase 1/5: unfroze layer4.0 (1/5 groups trainable)" in caplog.text
    assert "epoch 2, phase 2/5: unfroze layer3.0 (2/5 groups trainable)" in caplog.text
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert [e.value for e in events.Scalars("unfreezing/trainable_groups")] == [0.0, 1.0, 2.0]


def test_works_with_a_compiled_module(tmp_path):
    net = model()
    compiled = torch.compile(net, backend="eager")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train, val = loaders(n=8)  # one batch each: the time is dynamo's compiling, once per mode and trainable set
    trainer(tmp_path, [ProgressiveUnfreezing(every_n_epochs=1)], max_epochs=2).fit(compiled, train, val)
    after = net.state_dict()
    assert not torch.equal(
        before["backbone.model.layer4.0.conv1.weight"], after["backbone.model.layer4.0.conv1.weight"]
    )
    assert torch.equal(before["backbone.model.layer3.0.conv1.weight"], after["backbone.model.layer3.0.conv1.weight"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"exactly one of every_n_epochs, milestones, monitor, but got None"),
        ({"every_n_epochs": 1, "monitor": "val/loss"}, r"but got \['every_n_epochs', 'monitor'\]"),
        ({"milestones": {0: "all"}}, r"`milestones` to be keyed by epochs >= 1.*but got 0"),
        ({"every_n_epochs": 1, "groups_per_step": 0}, r"`groups_per_step` to be an integer >= 1"),
        ({"monitor": "val/loss", "mode": "up"}, r"`mode` to be 'min' or 'max', but got 'up'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ProgressiveUnfreezing(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"milestones": {2: ["layer9"]}},
            r"entry 'layer9'.*matched no group.*\(all 5\): conv1\+bn1, layer1.0, layer2.0, layer3.0, layer4.0\.",
        ),
        ({"milestones": {1: ["layer4.0"], 3: [7]}}, r"but got 7\. Valid names: conv1\+bn1, layer1.0"),
        ({"milestones": {1: ["(unclosed"]}}, r"milestone 1 entry '\(unclosed'.*not a valid regex"),
        ({"every_n_epochs": 1, "initial_groups": 6}, r"`initial_groups` to be at most 5"),
    ],
)
def test_schedule_is_validated_against_the_model_before_training(tmp_path, kwargs, match):
    train, val = loaders()
    with pytest.raises(ConfigError, match=match):
        trainer(tmp_path, [ProgressiveUnfreezing(**kwargs)]).fit(model(), train, val)


def test_unknown_monitor_lists_logged_metrics_at_the_sanity_check(tmp_path):
    train, val = loaders()
    steps = []
    fit = trainer(tmp_path, [ProgressiveUnfreezing(monitor="val/accuracy")], num_sanity_val_steps=1)
    with pytest.raises(ConfigError, match=r"`monitor` to be a logged metric, but got 'val/accuracy'.*val/acc"):
        fit.fit(model(), train, val)
    steps.append(fit.global_step)
    assert steps == [0], "reported before any training step"


def test_feature_extraction_is_refused(tmp_path):
    train, val = loaders()
    net = FeatureExtraction("test_resnet", weights=None, num_classes=4)
    with pytest.raises(ConfigError, match=r"but got FeatureExtraction.*Use FineTuning"):
        trainer(tmp_path, [ProgressiveUnfreezing(every_n_epochs=1)]).fit(net, train, val)


def test_refused_by_the_capability_a_strategy_declares(tmp_path):
    """No strategy is imported to refuse it: a user's strategy that declares a frozen backbone is refused alike."""

    class FrozenBackbone(FineTuning):
        trains_backbone = False

    train, val = loaders()
    net = FrozenBackbone("test_resnet", weights=None, num_classes=4)
    with pytest.raises(ConfigError, match=r"but got FrozenBackbone \(its backbone never trains\)"):
        trainer(tmp_path, [ProgressiveUnfreezing(every_n_epochs=1)]).fit(net, train, val)
