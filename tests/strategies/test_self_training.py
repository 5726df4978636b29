"""SelfTraining on the real MNIST -> digits shift does not collapse onto a few classes (it did, before its warm-up,
mean teacher and class-balance loss: 33% target accuracy against SourceOnly's 60% in the benchmark)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from tests.conftest import quiet_trainer
from tlkit.datamodules import MnistDigitsDataModule
from tlkit.functional import class_balance_loss
from tlkit.strategies import SelfTraining

# The configuration self-training shipped with before: pseudo-labels from the first step, from the model itself.
BEFORE = {"warmup": 0.0, "teacher_decay": 0.0, "balance_weight": 0.0}


def target_predictions(settings: dict) -> tuple[torch.Tensor, float]:
    """Train 120 steps (lite0, 32 px, the shipped optimizer settings); the class histogram of the target validation
    predictions and their accuracy."""
    L.seed_everything(0, verbose=False)
    data = MnistDigitsDataModule(source="mnist", image_size=32, iters_per_epoch=40, batch_size=32, seed=0)
    model = SelfTraining(
        "tf_efficientnet_lite0",
        backbone_lr_factor=0.5,
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01),
        **settings,
    )
    quiet_trainer(max_epochs=3, limit_val_batches=0, num_sanity_val_steps=0).fit(model, datamodule=data)
    model.eval()
    predictions, labels = [], []
    with torch.no_grad():
        for x, y in data.evaluation_loader("target_val"):
            predictions.append(model(x).argmax(dim=1))
            labels.append(y)
    predicted, truth = torch.cat(predictions), torch.cat(labels)
    return torch.bincount(predicted, minlength=10), (predicted == truth).float().mean().item()


@pytest.mark.parametrize(("settings", "collapses"), [({}, False), (BEFORE, True)], ids=["default", "before"])
def test_self_training_keeps_its_target_predictions_spread_over_the_classes(settings, collapses):
    histogram, accuracy = target_predictions(settings)
    largest_share = histogram.max().item() / histogram.sum().item()
    if collapses:  # the failure the defaults fix, reproduced: most target digits fall into one class
        assert largest_share > 0.5 and accuracy < 0.4, (histogram.tolist(), accuracy)
    else:
        assert largest_share < 0.3 and accuracy > 0.4, (histogram.tolist(), accuracy)


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
