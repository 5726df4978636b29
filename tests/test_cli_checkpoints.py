"""The `tlkit` command with checkpoints: continue a run, keep its optimizer, refuse a checkpoint that does not fit the
data or config, extend a run only where the schedule allows, write predictions, report errors in one line."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY_FIT_ARGS, write_image_folder
from tlkit.checkpoint import info_of
from tlkit.cli import TLKitCLI, main

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_FIT_ARGS
SGD = ["--model.optimizer=torch.optim.SGD", "--model.optimizer.lr=0.05", "--model.optimizer.momentum=0.9"]


def run_dir(tmp_path: Path, version: int = 0) -> Path:
    return tmp_path / "logs" / "tlkit" / f"version_{version}"


def error_lines(capsys, args: list[str]) -> list[str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture
def fitted(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    TLKitCLI(args=["fit", *TINY, *SGD])
    return run_dir(tmp_path)


def test_last_ckpt_is_the_latest_epoch_and_resume_keeps_the_configured_optimizer(fitted, tmp_path):
    last = torch.load(fitted / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and info_of(last).optimizer == "torch.optim.sgd.SGD"
    # `--ckpt_path last` continues the same run folder with SGD (LightningCLI alone rebuilt AdamW and crashed).
    cli = TLKitCLI(args=["fit", *TINY, *SGD, "--trainer.max_epochs=2", "--ckpt_path", "last"])
    assert isinstance(cli.trainer.optimizers[0], torch.optim.SGD)
    assert Path(cli.trainer.logger.log_dir).resolve() == fitted
    assert not run_dir(tmp_path, 1).exists()


def test_resume_with_another_optimizer_is_one_line(fitted, capsys):
    lines = error_lines(capsys, ["fit", *TINY, "--ckpt_path", str(fitted / "checkpoints" / "last.ckpt")])
    assert len(lines) <= 2 and "model.optimizer" in lines[0] and "SGD" in lines[0] and "AdamW" in lines[0]


def test_extending_a_finished_default_schedule_is_refused_and_writes_nothing(fitted, capsys):
    before = {p: p.stat().st_mtime for p in fitted.rglob("*")}
    lines = error_lines(capsys, ["fit", *TINY, *SGD, "--trainer.max_epochs=4", "--ckpt_path", "last"])
    assert len(lines) <= 2 and "cosine" in lines[0]
    assert {p: p.stat().st_mtime for p in fitted.rglob("*")} == before  # no config-resumed-1.yaml, no event file


def test_checkpoint_alone_rebuilds_its_run_for_test_and_predict(fitted, tmp_path):
    ckpt = fitted / "checkpoints" / "last.ckpt"
    cli = TLKitCLI(args=["test", "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar=false"])
    assert cli.model.backbone.name == "test_resnet" and type(cli.datamodule).__name__ == "DigitsDataModule"
    images = tmp_path / "new_images"
    write_image_folder(images / "any" / "layout", classes=("3", "7"), per_class=3)
    TLKitCLI(args=["predict", "--ckpt_path", str(ckpt), f"--data.predict_dir={images}"])
    rows = list(csv.DictReader((fitted / "predictions" / "predictions-last.csv").open()))
    assert sorted(Path(r["file"]).name for r in rows) == sorted(p.name for p in images.rglob("*.png"))
    assert {r["prediction"] for r in rows} <= {str(d) for d in range(10)}
    assert (fitted / "predictions" / "predictions-last.jsonl").is_file()
    # The test's results are beside the run they evaluate (and no tlkit select mistakes them for a fit).
    assert sorted(p.name for p in (tmp_path / "logs" / "tlkit").iterdir()) == ["version_0"]
    assert Path(cli.trainer.logger.log_dir).resolve() == (fitted / "test_0").resolve()
    events = EventAccumulator(str(fitted / "test_0"))
    events.Reload()
    # Test metrics, and no placeholder hp_metric of -1 beside the fits the HParams tab compares.
    assert "test/acc" in events.Tags()["scalars"] and "hp_metric" not in events.Tags()["scalars"]
    assert not (tmp_path / "config.yaml").exists()


def test_a_checkpoint_outside_a_run_folder_predicts_beside_itself(fitted, tmp_path):
    lone = tmp_path / "shared" / "model.ckpt"
    lone.parent.mkdir()
    lone.write_bytes((fitted / "checkpoints" / "last.ckpt").read_bytes())
    TLKitCLI(args=["predict", "--ckpt_path", str(lone), "--trainer.enable_progress_bar=false"])
    assert (tmp_path / "shared" / "predictions" / "predictions-model.csv").is_file()
    assert not (tmp_path / "logs" / "predictions").exists()


def test_predict_names_every_file_it_skips_and_why(fitted, tmp_path, capfd):
    from tests._console import run_here_captured

    folder = write_image_folder(tmp_path / "incoming", classes=("3",), per_class=2)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (folder / "scan.xyz").write_bytes(b"data")
    ckpt = fitted / "checkpoints" / "last.ckpt"
    result = run_here_captured(["predict", "--ckpt_path", str(ckpt), f"--data.predict_dir={folder}"], tmp_path, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout + result.stderr
    assert "skipped 3 of 5 file(s)" in out
    for name, why in (("notes.txt", "not an image file"), ("broken.png", "unreadable"), ("scan.xyz", "not an image")):
        assert any(name in line and why in line for line in out.splitlines()), (name, out[-2000:])
    assert "wrote 2 predictions" in out


def test_checkpoint_from_other_data_is_one_line_naming_both(fitted, tmp_path, capsys):
    folder = write_image_folder(tmp_path / "four", classes=("0", "1", "2", "3"), per_class=8)
    args = ["test", *TINY[:3], "--data=ImageFolderDataModule", f"--data.data_dir={folder}"]
    lines = error_lines(capsys, [*args, "--ckpt_path", str(fitted / "checkpoints" / "last.ckpt")])
    assert len(lines) <= 2 and "10 classes" in lines[0] and "4 classes" in lines[0]


def test_checkpoint_of_another_backbone_is_one_line(fitted, capsys):
    args = ["test", "--model=FineTuning", "--model.backbone=test_efficientnet", "--model.weights=null"]
    lines = error_lines(
        capsys, [*args, "--data=DigitsDataModule", "--ckpt_path", str(fitted / "checkpoints" / "last.ckpt")]
    )
    assert len(lines) <= 2 and "test_resnet" in lines[0] and "test_efficientnet" in lines[0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--ckpt_path", "last"], r"--ckpt_path last.*logs/tlkit/version_\*"),
        (["--ckpt_path", "missing.ckpt"], r"missing\.ckpt \(no such file\)"),
        (["--model.lr_decai=0.5"], r"'lr_decai' of FineTuning\. Did you mean 'lr_decay'"),
        (["--trainer.max_epochz=3"], r"Did you mean 'trainer\.max_epochs'"),
        (["--model.head=conv"], r"`model\.head` to be one of 'linear', 'mlp', but got 'conv'"),
        (["--data.batch_size=0"], r"`batch_size` to be an integer >= 1"),
        (["--model.weights=pyproject.toml"], r"safetensors state dict, but got 'pyproject.toml \(unreadable"),
        (["--data=ImageFolderDataModule", "--data.data_dir=pyproject.toml"], r"is a file"),
        (["--data=ImageFolderDataModule", "--data.data_dir=one"], r"at least 2 classes, but got 1 \(0\) in '.*one'"),
        (["--model=DomainAdaptation"], r"base class DomainAdaptation'\. Valid: .*DANN, .*SourceOnly"),
        (["--data=DomainDataModule"], r"base class DomainDataModule'\. Valid: .*DigitsMDataModule"),
        (["--model=NoSuchStrategy"], r"got 'NoSuchStrategy'\. Valid: CDAN, DAN, DANN, DeepCORAL, FeatureExtraction"),
        (["--model.backbone=test_vit", "--data.image_size=8"], r"`image_size` to be a size .test_vit. accepts.*got 8"),
        (["--data.image_size=0"], r"`image_size` to be a positive number of pixels.*got 0"),
        (["--data.image_size=-5"], r"`image_size` to be a positive number of pixels.*got -5"),
        # Full option names only: a prefix of one is an unknown option, with the closest names.
        (["--trainer.max_epoch=1"], r"Unknown option '--trainer\.max_epoch'\. Did you mean 'trainer\.max_epochs'"),
        (["--checkpoint.monit=val/loss"], r"Unknown option '--checkpoint\.monit'\. Did you mean 'checkpoint\.monitor'"),
        (["--trainer.max_epochs=two"], r"`trainer\.max_epochs` to be an int or null, but got 'two'"),
        # A union inside a class's arguments: the argument is named, not the class's key.
        (
            ["--model=DANN", "--data=DigitsMDataModule", "--model.reference_epochs=two"],
            r"`model\.reference_epochs` to be an int or one of 'auto', but got 'two'",
        ),
        (
            ["--model.optimizer.lr=-0.1"],
            r"`model\.optimizer` to have arguments it accepts.*Invalid learning rate: -0\.1",
        ),
        (["--trainer.strategy=fsdp"], r"`trainer\.strategy` to be a strategy the accelerator .* can run.*got 'fsdp'"),
        # The task and the data's targets: checked before any run folder exists.
        (["--model.task=MultiLabel"], r"serves label sets for task MultiLabel, but DigitsDataModule serves one class"),
        (
            ["--model.task=Regression", "--data=MultiDigitsDataModule"],
            r"numeric targets for task Regression, but Multi",
        ),
        (["--model.task=MultiLabel", "--model.task.threshold=1.5"], r"`task\.threshold` to be in \(0, 1\)"),
        (["--model=DANN", "--model.task=MultiLabel"], r"`task` to be Classification for DANN"),
        pytest.param(
            ["--trainer.accelerator=gpu"],
            r"`trainer\.accelerator` to be one this machine has \(auto, cpu\), but got 'gpu'",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
    ],
)
def test_user_errors_are_one_line_and_leave_no_run_folder(args, match, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    write_image_folder(tmp_path / "one", classes=("0",), per_class=4)
    lines = error_lines(capsys, ["fit", *TINY, *args])
    assert len(lines) == 2 and lines[0].startswith("tlkit fit: error: "), lines
    assert __import__("re").search(match, lines[0]), lines[0]
    assert not (tmp_path / "logs").exists(), "a failed start leaves no folder behind"


def test_bad_schedule_found_at_setup_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = (REPO / "configs" / "digits_lp_ft.yaml").read_text().replace("{15: all}", "{15: [layer9]}")
    (tmp_path / "lp_ft.yaml").write_text(config)
    lines = error_lines(capsys, ["fit", "--config", "lp_ft.yaml", *TINY[1:3]])
    assert len(lines) == 2 and "entry 'layer9'" in lines[0] and "(all 5): conv1+bn1" in lines[0], lines
    assert not (tmp_path / "logs").exists()


def test_yaml_syntax_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("model:\n  class_path: FineTuning\n   init_args: [\n")
    lines = error_lines(capsys, ["fit", "--config", "bad.yaml"])
    assert len(lines) <= 2 and "bad.yaml" in " ".join(lines), lines


def test_yaml_indentation_error_names_the_line_to_fix_not_the_enclosing_block(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = "model:\n  class_path: FineTuning\n  init_args:\n    backbone: test_resnet\n   lr_decay: 0.5\n"
    (tmp_path / "bad.yaml").write_text(text)
    lines = error_lines(capsys, ["fit", "--config", "bad.yaml"])
    assert len(lines) == 2 and "bad.yaml" in lines[0] and "line 5, column 4" in lines[0], lines
    assert "line 2" not in lines[0]  # PyYAML's enclosing block


def test_every_short_run_logs_each_group_lr(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = TLKitCLI(args=["fit", *TINY])  # 1 batch per epoch: Lightning's default interval (50) logged nothing
    events = EventAccumulator(str(run_dir(tmp_path)))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"lr-AdamW/{name}" for name in cli.model.backbone.group_names + ["head"]} <= tags


def test_sixteen_bit_images_keep_their_grey_levels(tmp_path):
    from tlkit.datamodules import open_rgb

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    pixels = np.asarray(open_rgb(tmp_path / "ramp.png"))
    assert len(np.unique(pixels)) == 256 and pixels.min() == 0 and pixels.max() == 255


def test_unlogged_checkpoint_monitor_fails_at_the_sanity_check(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lines = error_lines(capsys, ["fit", *TINY, "--checkpoint.monitor=val/accuracy"])
    assert len(lines) <= 2 and "'val/accuracy'" in lines[0] and "val/acc," in lines[0], lines
    assert not (tmp_path / "logs" / "tlkit" / "version_0").exists()


def test_resume_keeps_a_configured_scheduler_extends_it_and_refuses_another(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    step = ["--model.lr_scheduler=torch.optim.lr_scheduler.StepLR", "--model.lr_scheduler.step_size=1"]
    TLKitCLI(args=["fit", *TINY, *step])
    # A scheduler of the user's may run longer than planned (only the default cosine is refused).
    cli = TLKitCLI(args=["fit", *TINY, *step, "--trainer.max_epochs=3", "--ckpt_path", "last"])
    assert type(cli.trainer.lr_scheduler_configs[0].scheduler).__name__ == "StepLR"
    assert cli.trainer.current_epoch == 3 and not run_dir(tmp_path, 1).exists()
    other = ["--model.lr_scheduler=torch.optim.lr_scheduler.ExponentialLR", "--model.lr_scheduler.gamma=0.9"]
    lines = error_lines(capsys, ["fit", *TINY, *other, "--trainer.max_epochs=4", "--ckpt_path", "last"])
    assert len(lines) == 2 and "model.lr_scheduler" in lines[0] and "StepLR" in lines[0] and "ExponentialLR" in lines[0]
