"""The README's journey through the console script, in a temporary folder: fit the shipped digits config (augmentation
on, dropout), get killed mid-epoch, continue with ``--ckpt_path last``, and end bitwise where an uninterrupted run
ends; test and predict with the best checkpoint and read the written predictions. The killed runs and the two-device
runs are console-script processes; the uninterrupted references, the continued runs and test and predict run the same
entry point in this process (a process start is most of a small run's time; what is checked is the command's)."""

import csv
from pathlib import Path

import torch

from tests._console import TINY_IMAGE_MODEL, run_here, run_here_captured, shipped, tlkit, tlkit_ranks_at_once

# The shipped config, made small: 3 epochs of 4 batches, a tiny backbone, an MLP head with dropout, a checkpoint
# every 3 steps (the mid-epoch saving a long epoch needs).
RUN = shipped(
    "digits_finetune.yaml",
    *TINY_IMAGE_MODEL,
    "--model.init_args.head=mlp",
    "--model.init_args.dropout=0.3",
    "--trainer.max_epochs=3",
    "--checkpoint.every_n_train_steps=3",
)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_killed_run_continues_bitwise(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    run_here(RUN, straight)

    # Killed at the start of step 7 (epoch 1, batch 3): the newest checkpoint is step 6's, mid-epoch.
    kill = ["--trainer.callbacks+=tests._kill.KillAtStep", "--trainer.callbacks.init_args.step=7"]
    crashed = tlkit(RUN + kill, killed)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    run_dir = killed / "logs" / "digits_finetune" / "version_0"
    before = {p.name for p in (run_dir / "checkpoints").glob("*.ckpt")}
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6

    run_here(RUN + ["--ckpt_path", "last"], killed)
    assert not (killed / "logs" / "digits_finetune" / "version_1").exists(), "continued in the same run folder"
    after = {p.name for p in (run_dir / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in after and (before - {"last.ckpt"}) - after <= {b for b in before if b.startswith("epoch")}
    assert (run_dir / "config.yaml").is_file() and (run_dir / "config-resumed-1.yaml").is_file()

    expected = weights(straight / "logs" / "digits_finetune" / "version_0" / "checkpoints" / "last.ckpt")
    got = weights(run_dir / "checkpoints" / "last.ckpt")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert max((expected[k].double() - got[k].double()).abs().max().item() for k in expected) == 0.0


def test_the_best_checkpoint_tests_and_predicts(tmp_path, capfd):
    run_here(RUN, tmp_path)
    run_dir = tmp_path / "logs" / "digits_finetune" / "version_0"
    best = next(p for p in (run_dir / "checkpoints").glob("epoch*.ckpt"))
    tested = run_here_captured(
        ["test", "--ckpt_path", str(best), "--trainer.enable_progress_bar=false"], tmp_path, capfd
    )
    assert tested.returncode == 0 and "test/acc" in tested.stdout, tested.stderr[-2000:]

    predict = ["predict", "--ckpt_path", str(best), "--trainer.enable_progress_bar=false"]
    predicted = run_here_captured(predict, tmp_path, capfd)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    written = run_dir / "predictions" / f"predictions-{best.stem}.csv"
    assert str(written) in predicted.stdout + predicted.stderr or written.name in predicted.stdout + predicted.stderr
    rows = list(csv.DictReader(written.open()))
    assert len(rows) == 359  # the digits test split
    assert {row["prediction"] for row in rows} <= {str(d) for d in range(10)}
    assert all(0.0 < float(row["probability"]) <= 1.0 and len(row["top_k"].split()) == 3 for row in rows)


def test_ddp_run_resumed_mid_epoch_ends_bitwise_identical(tmp_path):
    # 2 CPU ranks (gloo), a DataLoader worker each, checkpoints every step: resume from step 3 (inside epoch 1). Both
    # ranks of each run start at once (the default launcher's two-device run, progress bar on, is test_multi_device's
    # classification run): the resumed run's rank 1 reads what rank 0's run folder holds, as a launched rank does.
    ddp = ["--trainer.strategy=ddp", "--trainer.accelerator=cpu"]
    every_step = ["--checkpoint.every_n_train_steps=1", "--checkpoint.save_top_k=-1", "--checkpoint.filename={step}"]
    run = [*RUN[:-1], *ddp, *every_step, "--data.init_args.num_workers=1", "--trainer.max_epochs=2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    tlkit_ranks_at_once(run, straight)
    assert [p.name for p in (straight / "logs" / "digits_finetune").iterdir()] == ["version_0"]  # one run folder
    checkpoints = straight / "logs" / "digits_finetune" / "version_0" / "checkpoints"
    mid_epoch = torch.load(checkpoints / "3.ckpt", weights_only=True)
    assert mid_epoch["epoch"] == 1 and mid_epoch["global_step"] == 3  # 2 steps per epoch per rank
    tlkit_ranks_at_once([*run, "--ckpt_path", str(checkpoints / "3.ckpt")], resumed)
    expected = weights(checkpoints / "last.ckpt")
    got = weights(resumed / "logs" / "digits_finetune" / "version_0" / "checkpoints" / "last.ckpt")
    assert max((expected[k].double() - got[k].double()).abs().max().item() for k in expected) == 0.0


def _kill_and_resume_matches_a_straight_run(tmp_path: Path, run: list[str], run_name: str, kill_step: int) -> Path:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    run_here(run, straight)
    kill = ["--trainer.callbacks+=tests._kill.KillAtStep", f"--trainer.callbacks.init_args.step={kill_step}"]
    assert tlkit(run + kill, killed).returncode == -9
    run_here(run + ["--ckpt_path", "last"], killed)
    expected = weights(straight / "logs" / run_name / "version_0" / "checkpoints" / "last.ckpt")
    got = weights(killed / "logs" / run_name / "version_0" / "checkpoints" / "last.ckpt")
    assert expected.keys() == got.keys()
    assert max((expected[k].double() - got[k].double()).abs().max().item() for k in expected) == 0.0
    return killed / "logs" / run_name / "version_0" / "checkpoints" / "last.ckpt"


def test_the_lora_config_killed_and_resumed_ends_bitwise_with_adapter_only_checkpoints(tmp_path):
    run = shipped(
        "digits_lora.yaml",
        "--data.init_args.image_size=32",
        "--data.init_args.labels_per_class=4",
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=2",  # what is compared is training; a full validation per epoch adds only time
        "--trainer.enable_progress_bar=false",
        "--checkpoint.every_n_train_steps=1",
    )
    last = _kill_and_resume_matches_a_straight_run(tmp_path, run, "digits_lora", kill_step=3)
    state = weights(last)
    assert not any(k.endswith("base_layer.weight") for k in state)  # adapter-only, resumed from one all the same
    assert any("lora_A" in k for k in state)


def test_the_multi_label_config_killed_and_resumed_ends_bitwise_with_its_thresholds(tmp_path):
    run = shipped(
        "multidigits_multilabel.yaml",
        *TINY_IMAGE_MODEL,
        "--data.init_args.num_images=160",  # 4 training batches an epoch
        "--trainer.max_epochs=2",
        "--checkpoint.every_n_train_steps=1",
    )
    last = _kill_and_resume_matches_a_straight_run(tmp_path, run, "multidigits_multilabel", kill_step=5)
    thresholds = weights(last)["task.thresholds"]
    assert not torch.all(thresholds == 0.5)  # fitted on validation, and resumed into the same values


def test_the_text_config_killed_and_resumed_ends_bitwise(tmp_path, tiny_bert):
    run = shipped(
        "text_gradual_unfreezing.yaml",
        f"--model.init_args.backbone=hf:{tiny_bert}",
        "--data.init_args.labels_per_class=8",
        "--data.init_args.batch_size=4",
        "--trainer.max_epochs=3",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--checkpoint.every_n_train_steps=1",
    )
    _kill_and_resume_matches_a_straight_run(tmp_path, run, "text_gradual_unfreezing", kill_step=6)


def test_the_segmentation_config_gradually_unfrozen_killed_mid_epoch_and_resumed_ends_bitwise(tmp_path):
    run = shipped(
        "digit_scenes_segmentation.yaml",
        *TINY_IMAGE_MODEL[:2],
        "--data.init_args.num_images=40",  # 4 training batches of 8 an epoch
        "--data.init_args.scene_size=32",
        "--data.init_args.batch_size=8",
        "--model.init_args.dropout=0.2",
        "--trainer.callbacks+=ProgressiveUnfreezing",
        "--trainer.callbacks.init_args.every_n_epochs=1",
        "--trainer.callbacks+=LRWarmup",
        "--trainer.callbacks.init_args.duration=3",
        "--trainer.max_epochs=2",
        "--checkpoint.every_n_train_steps=1",
    )
    _kill_and_resume_matches_a_straight_run(tmp_path, run, "digit_scenes_segmentation", kill_step=5)


def test_the_detection_config_killed_mid_epoch_and_resumed_ends_bitwise(tmp_path):
    run = shipped(
        "digit_scenes_detection.yaml",
        *TINY_IMAGE_MODEL[:2],
        "--data.init_args.num_images=40",  # 4 training batches of 8 an epoch
        "--data.init_args.scene_size=64",
        "--data.init_args.batch_size=8",
        "--trainer.max_epochs=2",
        "--checkpoint.every_n_train_steps=1",
    )
    _kill_and_resume_matches_a_straight_run(tmp_path, run, "digit_scenes_detection", kill_step=5)
