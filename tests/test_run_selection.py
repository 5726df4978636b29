"""Choosing among finished runs by a label-free validator: `tlkit.engines.run_selection` and ``tlkit select``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from tlkit.cli import TLKitCLI, main
from tlkit.engines.run_metrics import run_metrics
from tlkit.engines.run_selection import (
    automatic_metric,
    consensus_scores,
    differing_settings,
    direction_in_runs,
    score_runs,
    select_run,
)
from tlkit.errors import ConfigError
from tlkit.strategies.target_predictions import TARGET_PREDICTIONS


def fake_run(
    folder: Path, values: dict[str, list[float]], trade_off: float, checkpoint_epochs=(), strategy: str = "DANN"
) -> Path:
    """A run folder as `tlkit fit` leaves it: TensorBoard scalars per validation epoch, config.yaml, checkpoints."""
    writer = SummaryWriter(str(folder))
    for epoch in range(len(next(iter(values.values())))):
        step = 10 * (epoch + 1)
        writer.add_scalar("epoch", epoch, step)
        for name, curve in values.items():
            writer.add_scalar(name, curve[epoch], step)
    writer.close()
    config = {"model": {"class_path": strategy, "init_args": {"trade_off": trade_off}}, "seed_everything": 0}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "checkpoints").mkdir()
    for epoch in checkpoint_epochs:
        (folder / "checkpoints" / f"epoch{epoch:03d}-val_snd0.5000.ckpt").write_bytes(b"")
    return folder


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [
        fake_run(tmp_path / "version_0", {"val/snd": [0.1, 0.5, 0.3], "val/loss": [2.0, 1.5, 1.7]}, 0.3, [1]),
        fake_run(tmp_path / "version_1", {"val/snd": [0.2, 0.4, 0.45], "val/loss": [2.0, 1.2, 1.4]}, 1.0),
    ]


def test_each_run_scores_its_best_epoch_and_the_best_run_is_selected(runs):
    scores = score_runs(runs, "val/snd", "max")
    assert [(s.value, s.epoch) for s in scores] == [pytest.approx((0.5, 1)), pytest.approx((0.45, 2))]
    assert scores[0].checkpoint == runs[0] / "checkpoints" / "epoch001-val_snd0.5000.ckpt"
    assert scores[1].checkpoint is None  # that epoch's checkpoint was not kept
    assert select_run(scores, "max").run == runs[0]
    mode = direction_in_runs("val/loss", [run_metrics(run) for run in runs])
    by_loss = score_runs(runs, "val/loss", mode)
    assert mode == "min" and select_run(by_loss, "min").run == runs[1]
    assert differing_settings(runs) == [{"model.init_args.trade_off": 0.3}, {"model.init_args.trade_off": 1.0}]


def test_a_metric_no_run_logged_names_the_ones_it_did(runs):
    with pytest.raises(ConfigError, match=r"`by`.*logged \(val/loss, val/snd\).*'val/bnm'"):
        score_runs(runs, "val/bnm", "max")


def test_select_command_prints_the_table_and_writes_json(runs, tmp_path, capsys):
    out = tmp_path / "selection.json"
    main(["select", "--runs", str(tmp_path / "version_*"), "--by", "val/snd", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "model.init_args.trade_off" in printed and f"Selected by val/snd (max): {runs[0]}" in printed
    assert "Checkpoint:" in printed
    assert json.loads(out.read_text())["selected"] == str(runs[0])


def test_select_compares_strategies_by_class_ami_and_a_sweep_by_safe_im_by_default(tmp_path, capsys):
    """``--by auto``: runs of different strategies are chosen by val/class_ami (IM's pick prefers the confident
    MCC run here, as it did on the benchmark), the runs of one strategy by val/safe_im."""
    curves = {
        "MCC": {"val/safe_im": [0.2, 2.2], "val/class_ami": [0.3, 0.70], "val/pixel_ami": [0.16, 0.34]},
        "SelfTraining": {"val/safe_im": [0.2, 1.7], "val/class_ami": [0.3, 0.78], "val/pixel_ami": [0.16, 0.42]},
    }
    mcc = fake_run(tmp_path / "mcc" / "version_0", curves["MCC"], 1.0, strategy="tlkit.strategies.MCC")
    fake_run(
        tmp_path / "mcc" / "version_1", {"val/safe_im": [0.1, 1.9], "val/class_ami": [0.3, 0.9]}, 0.3, strategy="MCC"
    )
    self_training = fake_run(tmp_path / "st" / "version_0", curves["SelfTraining"], 1.0, strategy="SelfTraining")
    assert automatic_metric([run_metrics(mcc), run_metrics(self_training)]) == (
        "val/class_ami",
        "runs of 2 strategies",
    )
    main(["select", "--runs", f"[{mcc}, {self_training}]"])
    printed = capsys.readouterr().out
    assert f"Selected by val/class_ami (max, auto: runs of 2 strategies): {self_training}, epoch 1" in printed
    assert "classes are shapes (digits, characters), --by val/pixel_ami compares methods" in printed
    assert "| best val/class_ami |" in printed
    main(["select", "--runs", f"[{mcc}, {self_training}]", "--by", "val/pixel_ami"])
    assert f"Selected by val/pixel_ami (max): {self_training}, epoch 1" in capsys.readouterr().out
    main(["select", "--runs", str(tmp_path / "mcc" / "version_*")])
    printed = capsys.readouterr().out
    assert f"Selected by val/safe_im (max, auto: the runs' checkpoint metric): {mcc}, epoch 1" in printed
    assert "pixel_ami" not in printed  # the hint is for comparing strategies


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--runs", "nowhere/version_*"], r"`runs`.*'nowhere/version_\*'"),
        (["--runs", "{runs}", "--by", "val/imm"], r"`by`.*val/snd"),
        (["--runs", "{runs}", "--mode", "up"], r"mode"),
    ],
)
def test_bad_select_options_are_one_line(args, match, runs, tmp_path, capsys):
    args = [a.replace("{runs}", str(tmp_path / "version_*")) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["select", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert any(__import__("re").search(match, line) for line in err.splitlines()), err


def test_a_cli_sweep_is_selected_by_its_validator(tmp_path, monkeypatch, capsys):
    """Two `tlkit fit` runs of DANN with different trade_off, then `tlkit select` picks the one whose best val/snd
    is the larger."""
    monkeypatch.chdir(tmp_path)
    for trade_off in (0.1, 3.0):
        args = ["fit", "--model=DANN", "--model.backbone=test_efficientnet", "--model.weights=null"]
        args += [f"--model.trade_off={trade_off}", "--data=DigitsMDataModule", "--data.image_size=32"]
        args += ["--data.iters_per_epoch=2", "--data.batch_size=8", "--trainer.max_epochs=2"]
        args += ["--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false"]
        TLKitCLI(args=args)
    capsys.readouterr()
    main(["select", "--runs", "logs/tlkit/version_*", "--by", "val/snd"])
    printed = capsys.readouterr().out
    best = {}
    for run in sorted(Path("logs/tlkit").glob("version_*")):
        events = EventAccumulator(str(run))
        events.Reload()
        best[run] = max(e.value for e in events.Scalars("val/snd"))
    winner = max(best, key=best.get)
    assert f"Selected by val/snd (max): {winner}," in printed
    assert "| 0.1 |" in printed and "| 3.0 |" in printed  # the swept value, read from each run's config.yaml

    # Each fit kept its best val/safe_im epoch's target validation probabilities, which consensus compares.
    for run in best:
        kept = torch.load(run / TARGET_PREDICTIONS, weights_only=True)
        safe_im = [e.value for e in _scalars(run, "val/safe_im")]
        assert kept["epoch"] == safe_im.index(max(safe_im)) and kept["value"] == pytest.approx(max(safe_im))
        assert kept["probabilities"].shape == (16, 10)  # 2 validation batches of 8 target images, 10 digits
        assert torch.allclose(kept["probabilities"].float().sum(dim=1), torch.ones(16), atol=1e-2)
    main(["select", "--runs", "logs/tlkit/version_*", "--by", "consensus"])
    printed = capsys.readouterr().out
    assert "Selected by consensus (max): logs/tlkit/version_" in printed and "| best consensus |" in printed


def _scalars(run: Path, tag: str):
    events = EventAccumulator(str(run))
    events.Reload()
    return events.Scalars(tag)


def keep_predictions(run: Path, epoch: int, classes: list[int], confidence: float = 0.9) -> None:
    """What `TargetPredictionKeeper` leaves in a run folder: one confident prediction of each class in ``classes``."""
    probabilities = torch.full((len(classes), 3), (1 - confidence) / 2)
    probabilities[torch.arange(len(classes)), torch.tensor(classes)] = confidence
    torch.save({"epoch": epoch, "value": 0.0, "probabilities": probabilities.half()}, run / TARGET_PREDICTIONS)


def test_consensus_picks_the_run_agreeing_with_the_others_not_the_most_confident_one(tmp_path, capsys):
    """The run with the highest val/safe_im predicts one class for every image (a collapse IM rewards); the two
    others mostly agree: consensus picks the one agreeing most with the mean prediction, at its val/safe_im epoch
    (the epoch its kept predictions are of)."""
    collapsed = fake_run(tmp_path / "version_0", {"val/safe_im": [0.5, 2.0]}, 1.0, [1])
    agreeing = fake_run(tmp_path / "version_1", {"val/safe_im": [0.9, 0.4]}, 0.3, [0])
    close = fake_run(tmp_path / "version_2", {"val/safe_im": [0.2, 0.8]}, 0.1, [1])
    keep_predictions(collapsed, 1, [0, 0, 0, 0, 0, 0], confidence=0.6)
    keep_predictions(agreeing, 0, [0, 1, 2, 0, 1, 2])
    keep_predictions(close, 1, [0, 1, 2, 0, 1, 1], confidence=0.8)
    scores = consensus_scores([collapsed, agreeing, close])
    assert [s.epoch for s in scores] == [1, 0, 1]
    assert scores[1].checkpoint == agreeing / "checkpoints" / "epoch000-val_snd0.5000.ckpt"
    # The mean prediction is 0, 1, 2, 0, 1, 2 (the sixth image: 0.40 on class 2, 0.35 on 1, 0.25 on 0).
    assert [s.value for s in scores] == pytest.approx([2 / 6, 6 / 6, 5 / 6], abs=1e-6)
    assert select_run(scores, "max").run == agreeing
    assert select_run(score_runs([collapsed, agreeing, close], "val/safe_im", "max"), "max").run == collapsed

    main(["select", "--runs", str(tmp_path / "version_*"), "--by", "consensus"])
    assert f"Selected by consensus (max): {agreeing}, epoch 0, consensus = 1.0000" in capsys.readouterr().out


def test_consensus_of_runs_without_kept_predictions_or_on_other_images_is_one_line(tmp_path, capsys):
    first = fake_run(tmp_path / "version_0", {"val/safe_im": [0.5, 2.0]}, 1.0)
    second = fake_run(tmp_path / "version_1", {"val/safe_im": [0.9, 0.4]}, 0.3)
    keep_predictions(first, 1, [0, 1, 2])
    with pytest.raises(ConfigError, match=rf"{second / TARGET_PREDICTIONS}.*choose this one by val/safe_im"):
        consensus_scores([first, second])
    keep_predictions(second, 0, [0, 1, 2, 0])
    with pytest.raises(ConfigError, match=r"same target validation images.*\(3, 3\).*\(4, 3\)"):
        consensus_scores([first, second])
    with pytest.raises(SystemExit) as exit_info:
        main(["select", "--runs", str(tmp_path / "version_*"), "--by", "consensus"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and "same target validation images" in err


def test_a_folder_without_a_fit_is_skipped_and_named(runs, tmp_path, capsys):
    tested = tmp_path / "version_2"  # what `tlkit test` wrote before test results went beside their run
    SummaryWriter(str(tested)).close()
    (tested / "config.yaml").write_text("seed_everything: 0\n")
    main(["select", "--runs", str(tmp_path / "version_*"), "--by", "val/snd"])
    captured = capsys.readouterr()
    assert "skipped 1 folder(s) with no fit" in captured.err and "version_2" in captured.err
    assert str(tested) not in captured.out and "Selected by val/snd" in captured.out


def test_select_shows_how_far_each_picked_epochs_target_predictions_collapsed(tmp_path, capsys):
    """The domain-adaptation runs' collapse diagnostics at the picked epoch; a run whose pick filled fewer than half
    the classes its source-only reference filled is named as collapsed (MCC's failure: IM still prefers it)."""
    collapsed = {
        "val/im": [0.4, 1.9, 2.0],
        "val/target_top_class_share": [0.2, 0.6, 0.7],
        "val/target_predicted_classes": [8.0, 3.0, 2.0],
        "val/reference_target_predicted_classes": [8.0, 8.0, 8.0],
    }
    healthy = {**collapsed, "val/im": [0.4, 0.9, 1.0], "val/target_predicted_classes": [8.0, 8.0, 9.0]}
    healthy["val/target_top_class_share"] = [0.2, 0.15, 0.12]
    fake_run(tmp_path / "version_0", collapsed, 1.0)
    fake_run(tmp_path / "version_1", healthy, 0.3)
    main(["select", "--runs", str(tmp_path / "version_*"), "--by", "val/im"])
    printed = capsys.readouterr().out
    assert "| top class share | collapsed onto |" in printed
    assert "| 2.0000 | 2 | 0.70 | 2 of 8 classes |" in printed and "| 1.0000 | 2 | 0.12 |  |" in printed
    assert "Its target predictions collapsed onto 2 of 8 classes: a sign of negative transfer." in printed


def regression_run(folder: Path, maes: list[float]) -> Path:
    run = fake_run(folder, {"val/mae": maes, "val/rmse": [m * 1.5 for m in maes], "val/r2": [0.1] * len(maes)}, 1.0)
    config = {
        "model": {
            "class_path": "tlkit.strategies.FineTuning",
            "init_args": {"task": {"class_path": "tlkit.tasks.Regression"}},
        },
        "checkpoint": {"monitor": "val/acc", "mode": "auto"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_select_asks_the_task_which_way_a_metric_is_better(tmp_path, capsys):
    """Regression runs: val/mae and val/rmse are errors (their metrics say so); ``--by auto`` is the task's
    checkpoint metric, val/mae, minimised, at each run's best (lowest) epoch."""
    good = regression_run(tmp_path / "version_0", [1.5, 1.03, 1.2])
    bad = regression_run(tmp_path / "version_1", [1.9, 1.78, 1.8])
    for by in ("val/mae", "val/rmse", "auto"):
        main(["select", "--runs", str(tmp_path / "version_*"), "--by", by])
        printed = capsys.readouterr().out
        metric = "val/mae" if by == "auto" else by
        assert f"Selected by {metric} (min" in printed and f": {good}, epoch 1" in printed, printed
    assert "auto: the runs' checkpoint metric" in printed
    assert bad != good
    main(["select", "--runs", str(tmp_path / "version_*"), "--by", "val/r2"])
    assert "Selected by val/r2 (max)" in capsys.readouterr().out


def test_run_metrics_directions_come_from_the_metrics():
    from tlkit.engines.run_metrics import run_metrics_of_config

    def config(strategy: str, task: str | None = None) -> dict:
        init_args = {"task": {"class_path": f"tlkit.tasks.{task}"}} if task else {}
        return {"model": {"class_path": strategy, "init_args": init_args}}

    regression = run_metrics_of_config(config("FineTuning", "Regression"))
    assert regression.monitor == ("val/mae", "min")
    assert {k: regression.direction(k) for k in ("val/mae", "val/rmse", "test/r2", "val/loss")} == {
        "val/mae": "min",
        "val/rmse": "min",
        "test/r2": "max",
        "val/loss": "min",
    }
    classification = run_metrics_of_config(config("FeatureExtraction"))
    assert classification.monitor == ("val/acc", "max") and classification.direction("test/ece") == "min"
    detection = run_metrics_of_config(config("FineTuning", "Detection"))
    assert detection.monitor == ("val/map", "max") and detection.direction("val/map_50") == "max"
    dann = run_metrics_of_config(config("DANN"))
    assert dann.monitor == ("val/safe_im", "max")
    assert dann.direction("val/target_top_class_share") == "min" and dann.direction("val/class_ami") == "max"
    assert dann.direction("val/reference_im") == "max" and dann.direction("val/domain_acc") is None


def test_a_metric_without_a_direction_asks_for_mode(tmp_path, capsys):
    fake_run(tmp_path / "version_0", {"val/domain_acc": [0.5, 0.6]}, 1.0)
    with pytest.raises(SystemExit):
        main(["select", "--runs", str(tmp_path / "version_*"), "--by", "val/domain_acc"])
    assert "Expected `--mode` max or min for val/domain_acc" in capsys.readouterr().err
    main(["select", "--runs", str(tmp_path / "version_*"), "--by", "val/domain_acc", "--mode", "min"])
    assert "Selected by val/domain_acc (min)" in capsys.readouterr().out
