"""SelfTraining's measures against collapsing onto a few classes (warm-up, mean teacher, class-balance loss) are on by
default and wired in; their effect on the real MNIST -> digits shift is measured in benchmarks/self_training_collapse.py
(without them: 33% target accuracy against SourceOnly's 60% in the domain-adaptation benchmark)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import quiet_trainer
from tlkit.datamodules import DigitsMDataModule
from tlkit.functional import class_balance_loss
from tlkit.strategies import SelfTraining


class RecordAdaptation(Callback):
    """The adaptation weight of each training step, the class-balance loss of each epoch."""

    def __init__(self):
        self.weights, self.balance = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append(float(trainer.callback_metrics["train/adaptation_weight"]))

    def on_train_epoch_end(self, trainer, pl_module):
        self.balance.append(float(trainer.callback_metrics["train/class_balance_loss"]))


def test_the_defaults_hold_pseudo_labels_back_then_balance_them_with_a_lagging_teacher():
    """The three measures that keep self-training from collapsing onto one class (measured on real digits in
    benchmarks/self_training_collapse.py: without them most target digits fall into one class): no pseudo-labels for
    the first 30% of steps, then ``trade_off`` times pseudo-label plus class-balance loss, labels from a teacher."""
    L.seed_everything(0, verbose=False)
    model = SelfTraining("test_efficientnet", weights=None, reference_epochs=0)  # the warm-up alone, from step 1
    record = RecordAdaptation()
    data = DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=5)
    quiet_trainer(max_epochs=2, limit_val_batches=0, callbacks=[record]).fit(model, datamodule=data)
    trainer = model.trainer
    assert record.weights == [0.0] * 3 + [model.trade_off] * 7  # 3 of 10 steps are warm-up
    assert model.balance_weight > 0 and all(b > 0 for b in record.balance)
    student, teacher = model.backbone.state_dict(), model.teacher["backbone"].state_dict()
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert any(not torch.equal(student[k], teacher[k]) for k in student)
    trained = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not trained & {id(p) for p in model.teacher.parameters()}


def test_class_balance_loss_is_zero_when_spread_and_log_k_when_collapsed():
    assert class_balance_loss(torch.zeros(8, 4)).item() == pytest.approx(0.0, abs=1e-4)
    collapsed = torch.tensor([[30.0, 0.0, 0.0, 0.0]]).repeat(8, 1)
    assert class_balance_loss(collapsed).item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), abs=1e-3)


def test_self_training_resumes_bitwise_with_its_teacher(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tests.callbacks._helpers import max_difference
    from tests.strategies._helpers import seeded_fit
    from tlkit.datamodules import DigitsMDataModule

    def run(root, ckpt_path=None, extra=()):
        make = lambda: SelfTraining("test_efficientnet", weights=None, warmup=0.2)  # noqa: E731
        return seeded_fit(
            make, DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=3), root, ckpt_path, extra
        )

    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    reference = run(tmp_path / "a", extra=[every_epoch])
    student, teacher = reference.backbone.state_dict(), reference.teacher["backbone"].state_dict()
    assert any(not torch.equal(student[k], teacher[k]) for k in student)  # the teacher lags the model
    resumed = run(tmp_path / "b", ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt")
    assert max_difference(reference.state_dict(), resumed.state_dict()) == 0.0
