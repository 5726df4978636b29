"""Each task's parts on their own: the loss, the state it fits (thresholds, temperature, the targets' mean and std),
the decisions its metrics count, and what it writes for a prediction."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tlkit.errors import ConfigError
from tlkit.functional.calibration import best_f1_thresholds, fit_binary_temperature
from tlkit.strategies import DANN, FineTuning
from tlkit.tasks import Classification, MultiLabel, Regression, Task


def test_each_labels_threshold_is_the_one_with_the_best_f1_on_validation():
    probabilities = torch.tensor([[0.35, 0.9], [0.30, 0.8], [0.20, 0.7], [0.10, 0.6]])
    targets = torch.tensor([[1, 0], [1, 0], [0, 0], [0, 0]])
    thresholds = best_f1_thresholds(probabilities, targets)
    assert 0.20 < float(thresholds[0]) <= 0.30  # separates the two positives from the negatives
    assert float(thresholds[1]) == 0.5  # no positive example: nothing to judge a threshold on


def test_one_temperature_undoes_overconfident_sigmoids():
    torch.manual_seed(0)
    logits = torch.randn(5000, 4) * 2
    targets = torch.bernoulli(torch.sigmoid(logits))
    assert fit_binary_temperature(logits * 3, targets) == pytest.approx(3.0, rel=0.07)


def test_multi_label_loss_weights_rare_labels_and_metrics_decide_at_the_thresholds():
    task = MultiLabel(pos_weight="auto")
    task.build(2)
    task.prepare(np.array([[1, 0], [0, 0], [0, 0], [1, 1]], dtype=np.float32))  # label 1 is on 1 of 4
    assert task.pos_weight.tolist() == [1.0, 3.0]
    outputs, targets = torch.tensor([[0.3, -1.0]]), torch.tensor([[1.0, 1.0]])
    expected = F.binary_cross_entropy_with_logits(outputs, targets, pos_weight=torch.tensor([1.0, 3.0]))
    assert torch.allclose(task.loss(outputs, targets), expected)
    task.thresholds.copy_(torch.tensor([0.7, 0.2], dtype=torch.float64))
    decisions, _ = task.metric_inputs(outputs, targets, torch.ones(()))
    probabilities = torch.sigmoid(outputs)  # 0.574, 0.269
    assert ((decisions >= 0.5) == (probabilities >= task.thresholds.float())).all()
    record = task.prediction_record(probabilities[0].tolist(), ["cat", "dog"], top_k=3)
    assert record["labels"] == ["dog"]  # 0.269 >= 0.2, 0.574 < 0.7
    assert set(record["probabilities"]) == {"cat", "dog"}


def test_regression_learns_standardised_targets_and_answers_in_their_units():
    task = Regression(loss="l1")
    task.build(2)
    targets = np.array([[90.0, 1.0], [110.0, 1.0]], dtype=np.float32)  # the second target is constant
    task.prepare(targets)
    assert task.target_mean.tolist() == [100.0, 1.0] and task.target_std.tolist() == [10.0, 1.0]
    assert task.loss(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.from_numpy(targets)).item() == 0.0
    values = task.postprocess(torch.tensor([[0.5, 2.0]]), torch.ones(()))
    assert values.tolist() == [[105.0, 3.0]]
    assert task.prediction_record(values[0].tolist(), ["age", "score"], 3) == {"values": {"age": 105.0, "score": 3.0}}


def test_a_task_comes_back_from_the_config_a_checkpoint_keeps():
    task = Task.from_config(MultiLabel(pos_weight=[1.0, 2.0], threshold=0.3).config())
    assert isinstance(task, MultiLabel) and task.arguments() == {"pos_weight": [1.0, 2.0], "threshold": 0.3}
    assert isinstance(Task.from_config(Regression("huber").config()), Regression)
    with pytest.raises(ConfigError, match="tlkit task class"):
        Task.from_config({"class_path": "torch.nn.Linear"})


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: MultiLabel(threshold=1.5), r"`task.threshold` to be in \(0, 1\)"),
        (lambda: MultiLabel(threshold=0.0), r"`task.threshold` to be in \(0, 1\)"),
        (lambda: MultiLabel(pos_weight="balanced"), r"`task.pos_weight` to be 'auto'"),
        (lambda: Regression(loss="cross_entropy"), r"`task.loss` to be 'mse', 'l1' or 'huber'"),
        (
            lambda: FineTuning("test_resnet", weights=None, num_classes=1, task=Classification()),
            r"`num_classes` to be an integer >= 2 for task Classification",
        ),
        (
            lambda: FineTuning("test_resnet", weights=None, task=Regression(), temperature_scaling=True),
            r"`temperature_scaling` to be false with task Regression",
        ),
        (
            lambda: FineTuning("test_resnet", weights=None, task=MultiLabel(), label_smoothing=0.1),
            r"`label_smoothing` to be 0 with task MultiLabel",
        ),
        (
            lambda: DANN("test_resnet", weights=None, num_classes=3, task=MultiLabel()),
            r"`task` to be Classification for DANN \(domain adaptation is single-label",
        ),
    ],
)
def test_what_a_task_or_strategy_cannot_do_is_one_line_before_training(build, message):
    with pytest.raises(ConfigError, match=message) as caught:
        build()
    assert "\n" not in str(caught.value)


def test_multi_label_pos_weights_must_match_the_labels():
    with pytest.raises(ConfigError, match=r"`task.pos_weight` to be one number per label \(3\)"):
        FineTuning("test_resnet", weights=None, num_classes=3, task=MultiLabel(pos_weight=[1.0, 2.0]))


def test_the_reliability_diagram_bins_confidence_against_how_often_it_was_right():
    from tlkit.callbacks.tensorboard_report import reliability_figure

    confidences = torch.tensor([0.95, 0.95, 0.95, 0.95, 0.15, 0.15])
    accuracies = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # 95% confident, half right; 15%, never
    figure = reliability_figure(confidences, accuracies)
    bars = [patch.get_height() for patch in figure.axes[0].patches]
    assert sorted(h for h in bars if h > 0) == [0.5]  # the 0.95 bin: right half the time; the 0.15 bin: never
    expected = (4 * abs(0.5 - 0.95) + 2 * abs(0.0 - 0.15)) / 6
    assert figure.axes[0].get_title() == f"ECE {100 * expected:.1f}% (6 predictions)"


@pytest.mark.parametrize(
    ("task", "option", "match"),
    [
        (
            "Segmentation",
            ["--model.head=mlp"],
            r"`head` to be its default \('linear'\) with task Segmentation.*dropout",
        ),
        ("Detection", ["--model.dropout=0.2"], r"`dropout` to be its default \(0.0\) with task Detection.*reads: none"),
        ("Detection", ["--model.head_hidden_dim=64"], r"`head_hidden_dim` to be its default"),
    ],
)
def test_a_head_option_the_tasks_head_does_not_read_is_refused_in_one_line(task, option, match, tmp_path, capfd):
    """Dense tasks build decoders of their own: `head: mlp` with Segmentation was silently dropped."""
    from tests._console import run_here_captured

    args = ["fit", "--model=FineTuning", "--model.backbone=test_resnet", "--model.weights=null", f"--model.task={task}"]
    args += ["--data=DigitScenesDataModule", f"--data.targets={'masks' if task == 'Segmentation' else 'boxes'}"]
    result = run_here_captured([*args, *option], tmp_path, capfd)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 2 and re.search(match, lines[0]), lines
    assert not (tmp_path / "logs").exists()
