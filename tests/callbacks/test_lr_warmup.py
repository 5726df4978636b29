import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.callbacks._helpers import loaders, model, trainer
from tlkit.callbacks import LRWarmup, ProgressiveUnfreezing
from tlkit.errors import ConfigError

LR, DECAY, STEPS_PER_EPOCH = 0.01, 0.5, 4


class RecordLRs(Callback):
    """Each group's LR inside the optimizer step (after LRWarmup's hook) and outside it (what the scheduler set)."""

    def __init__(self):
        self.inside, self.outside = [], []

    def on_fit_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        optimizer.register_step_pre_hook(
            lambda opt, *_: self.inside.append({g["name"]: g["lr"] for g in opt.param_groups})
        )
        optimizer.register_step_post_hook(
            lambda opt, *_: self.outside.append({g["name"]: g["lr"] for g in opt.param_groups})
        )


def run(tmp_path, callbacks, epochs=3, **model_kwargs):
    record = RecordLRs()
    train, val = loaders()
    trainer(tmp_path, [*callbacks, record], max_epochs=epochs).fit(model(lr=LR, **model_kwargs), train, val)
    return record


def constant_scheduler(optimizer):
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def test_each_unfrozen_group_gets_its_own_warmup(tmp_path):
    warmup = LRWarmup(duration=6, start_factor=0.1)
    record = run(tmp_path, [ProgressiveUnfreezing(every_n_epochs=1), warmup], lr_scheduler=constant_scheduler, epochs=3)
    assert warmup.started_at == {"head": 0, "layer4.0": 4, "layer3.0": 8}
    for step, lrs in enumerate(record.inside):
        for name, start, depth in (("head", 0, 0), ("layer4.0", 4, 1), ("layer3.0", 8, 2)):
            if step >= start:
                expected = LR * DECAY**depth * warmup.factor(step - start, 6)
                assert lrs[name] == pytest.approx(expected, rel=1e-12), (step, name)
    assert record.inside[0]["head"] == pytest.approx(0.1 * LR)
    assert record.inside[7]["head"] == pytest.approx(LR)  # its warm-up is over, layer4.0's is not
    assert record.inside[7]["layer4.0"] < LR * DECAY


def test_warmup_multiplies_and_never_replaces_the_scheduler(tmp_path):
    with_warmup = run(tmp_path / "a", [LRWarmup(duration=5, shape="cosine")])
    without = run(tmp_path / "b", [])
    # Outside the optimizer step the LRs are exactly the cosine schedule's, warm-up or not.
    assert with_warmup.outside == without.outside
    for step, (inside, scheduled) in enumerate(zip(with_warmup.inside, without.inside)):
        factor = LRWarmup(duration=5, shape="cosine").factor(step, 5)
        for name in scheduled:
            assert inside[name] == pytest.approx(scheduled[name] * factor, rel=1e-12)


def test_cosine_and_epoch_units():
    warmup = LRWarmup(duration=2, unit="epochs", shape="cosine", start_factor=0.2)
    assert warmup.factor(0, 8) == pytest.approx(0.2)
    assert warmup.factor(4, 8) == pytest.approx(0.2 + 0.8 * 0.5 * (1 - math.cos(math.pi / 2)))
    assert warmup.factor(8, 8) == warmup.factor(100, 8) == 1.0

    class FakeTrainer:
        num_training_batches, accumulate_grad_batches = 10, 3

    assert warmup.duration_steps(FakeTrainer()) == 2 * 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"duration": 0}, r"`duration` to be an integer >= 1, but got 0"),
        ({"unit": "batches"}, r"`unit` to be 'steps' or 'epochs', but got 'batches'"),
        ({"shape": "exp"}, r"`shape` to be 'linear' or 'cosine', but got 'exp'"),
        ({"start_factor": 0.0}, r"`start_factor` to be in \(0, 1\], but got 0.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LRWarmup(**kwargs)
