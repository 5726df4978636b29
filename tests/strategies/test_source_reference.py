"""The source-only reference of a domain-adaptation run: collapse diagnostics, `val/safe_im`, the checkpoint
fallback, and what the end of fit says."""

from __future__ import annotations

import math

import pytest
import torch

from tests._console import REPO, run_here
from tlkit.checkpoint import adaptation_of, load_file
from tlkit.functional import below_reference, collapsed, im_score, predicted_classes, safe_im_score, top_class_share
from tlkit.functional.collapse import marginal_entropy
from tlkit.metrics import SafeInformationMaximization
from tlkit.strategies.source_reference import end_of_fit_report


def one_hot(classes: list[int], k: int = 10) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), k).float()


def test_collapse_statistics_count_the_classes_that_take_the_predictions():
    spread = one_hot(list(range(10)) * 3)
    one_class = one_hot([3] * 18 + [5, 7])
    assert predicted_classes(spread) == 9  # 27 of 30 rows, 90%, need 9 classes
    assert predicted_classes(one_class) == 1 and top_class_share(one_class) == pytest.approx(0.9)
    assert top_class_share(spread) == pytest.approx(0.1)
    assert marginal_entropy(spread) == pytest.approx(math.log(10), abs=1e-5)
    assert marginal_entropy(one_hot([2] * 5)) == pytest.approx(0.0, abs=1e-6)


def test_an_adapted_model_is_below_its_reference_when_it_collapses_or_forgets_the_source():
    reference = {"im": 1.0, "predicted_classes": 8.0, "source_acc": 0.95}
    assert not below_reference(7, 0.93, reference)
    assert below_reference(3, 0.95, reference)  # fewer than half the classes the reference predicts
    assert below_reference(8, 0.85, reference)  # 10 points of source accuracy lost
    assert not below_reference(3, None, {"im": 1.0})  # nothing to compare with
    assert collapsed(3, 8) and not collapsed(4, 8)  # half the reference's classes is the boundary


def test_safe_im_is_im_until_the_model_looks_worse_than_the_reference():
    confident = one_hot([0, 1, 2, 3] * 5)  # IM log(4): higher than the reference's 1.0
    assert safe_im_score(confident) == pytest.approx(float(im_score(confident)))
    healthy = {"im": 1.0, "predicted_classes": 4.0, "source_acc": 0.9}
    assert safe_im_score(confident, 0.9, healthy) == pytest.approx(math.log(4), abs=1e-5)
    # The same predictions after the source accuracy fell: one below the reference, so the reference is kept.
    assert safe_im_score(confident, 0.5, healthy) == pytest.approx(0.0, abs=1e-5)
    assert safe_im_score(confident, 0.9, {**healthy, "predicted_classes": 10.0}) == pytest.approx(0.0, abs=1e-5)


def test_the_safe_metric_counts_source_predictions_and_compares_with_its_reference():
    metric = SafeInformationMaximization()
    metric.update(one_hot([0, 1, 2, 3] * 5))
    metric.update_source(one_hot([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0]))  # all wrong: source accuracy 0
    assert metric.compute() == pytest.approx(math.log(4), abs=1e-5)  # no reference yet: IM
    metric.set_reference({"im": 0.5, "predicted_classes": 4.0, "source_acc": 0.9})
    metric._computed = None  # torchmetrics caches compute until the next update
    assert metric.compute() == pytest.approx(-0.5, abs=1e-5)


def test_the_end_of_fit_report_names_the_collapse_and_the_fallback():
    reference = {"epoch": 0.0, "reference": 1.0, "val/safe_im": 0.8, "val/target_predicted_classes": 8.0}
    healthy = {"epoch": 1.0, "val/safe_im": 1.2, "val/target_predicted_classes": 8.0}
    two_classes = {"epoch": 2.0, "val/safe_im": -0.2, "val/target_predicted_classes": 2.0}
    assert end_of_fit_report([reference, healthy], reference, "epoch 0", 10, "val/safe_im", "max") == []
    lines = end_of_fit_report([reference, two_classes], reference, "source-only epoch 0", 10, "val/safe_im", "max")
    assert len(lines) == 2
    assert "collapsed onto 2 of 10 classes after epoch 2" in lines[0] and "spread over 8" in lines[0]
    assert "no adapted epoch scored above the source-only reference on val/safe_im" in lines[1]
    assert "negative transfer" in lines[0]
    # A source-only run has no reference and does not adapt: its collapse is the shift, not negative transfer.
    (line,) = end_of_fit_report([two_classes], None, "", 10, "val/safe_im", "max", adapts_to_target=False)
    assert "collapsed onto 2 of 10 classes" in line and "the source model does not carry over" in line
    assert "negative transfer" not in line


def test_a_run_whose_adaptation_hurts_keeps_its_source_only_epoch_and_says_so(tmp_path, capsys, caplog):
    """Through the console: an adaptation that raises IM while destroying accuracy (it teaches the source shifted
    labels) must not be the checkpoint choice; epoch 0, the source-only reference, is, and the end of fit says so."""
    config = REPO / "configs" / "domain_adaptation" / "digits_m_dann.yaml"
    args = ["fit", "--config", str(config), "--model=tests.strategies._forgetting.ForgettingAdaptation"]
    args += ["--data.init_args.iters_per_epoch=20", "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"]
    run_here(args, tmp_path)
    printed = capsys.readouterr()
    checkpoints = sorted((tmp_path / "logs").rglob("epoch*.ckpt"))
    assert [p.name.split("-")[0] for p in checkpoints] == ["epoch000"], checkpoints
    saved = adaptation_of(load_file(checkpoints[0], "ckpt"))
    assert saved.reference["epoch"] == 0.0 and len(saved.epochs) == 1
    last = adaptation_of(load_file(next((tmp_path / "logs").rglob("last.ckpt")), "ckpt"))
    adapted = [row for row in last.epochs if not row.get("reference")]
    # IM alone would have preferred an adapted epoch: that is what the fallback guards against.
    assert max(row["val/im"] for row in adapted) > last.reference["val/im"]
    assert all(row["val/source_acc"] < last.reference["val/source_acc"] - 0.05 for row in adapted)
    said = printed.out + printed.err + caplog.text
    assert "no adapted epoch scored above the source-only reference on val/safe_im" in said
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"val/reference_im", "val/reference_source_acc", "val/target_top_class_share", "val/safe_im"} <= tags


def test_a_resumed_run_keeps_its_reference_and_the_epochs_it_measured(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tests.strategies._helpers import seeded_fit
    from tlkit.datamodules import DigitsMDataModule
    from tlkit.strategies import DANN

    def run(root, ckpt_path=None, callbacks=()):
        make = lambda: DANN("test_efficientnet", weights=None)  # noqa: E731
        data = DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=3)
        return seeded_fit(make, data, root, ckpt_path, callbacks)

    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    straight = run(tmp_path / "a", callbacks=[every_epoch])
    resumed = run(tmp_path / "b", ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt")
    assert straight.source_reference is not None and straight.source_reference["epoch"] == 0.0
    assert resumed.source_reference == straight.source_reference
    assert [row["epoch"] for row in resumed.adaptation_history] == [0.0, 1.0, 2.0]
    assert resumed.adaptation_history == straight.adaptation_history
    # What val/safe_im compares with is the reference restored from the checkpoint.
    assert resumed.target_validators["safe_im"].reference == straight.target_validators["safe_im"].reference
    assert resumed.target_validators["safe_im"].reference["im"] == straight.source_reference["val/im"]


def test_the_reference_epoch_trains_exactly_as_source_only_does(tmp_path):
    """The first epoch of an adaptation run is SourceOnly's first epoch, to the bit: its validation is the model the
    fallback falls back to."""
    from tests.strategies._helpers import seeded_fit
    from tlkit.datamodules import DigitsMDataModule
    from tlkit.strategies import MCC, SourceOnly

    def first_epoch(make):
        model = seeded_fit(make, DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=3), tmp_path)
        return {k: v for k, v in model.adaptation_history[0].items() if k != "reference"}

    adapted = first_epoch(lambda: MCC("test_efficientnet", weights=None))
    assert adapted == first_epoch(lambda: SourceOnly("test_efficientnet", weights=None))
