"""Runs on two devices (2 CPU processes, gloo) through the console script with the defaults users get: the progress
bar on, every collective entered by every rank. Each shipped config family finishes with its ranks bitwise equal:
text through gradual unfreezing's phase changes (the DDP wrapper rebuilt at each), domain adaptation with its
discriminator training, multi-label with its thresholds and temperature fitted on both ranks' validation outputs,
segmentation and detection with their decoders on the feature maps (DDP refuses a parameter no gradient reaches;
detection's mAP gathers every rank's boxes), classification as the shipped digits config. (Resumed mid-epoch: the DDP
journey in test_user_journey.py.)"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests._console import (
    TINY_IMAGE_MODEL,
    TLKIT,
    console_env,
    run_here,
    run_here_captured,
    shipped,
    start_tlkit,
    tlkit,
    wait_for_all,
)
from tests._hf_data import save_digit_dataset
from tests.conftest import write_image_folder
from tlkit.checkpoint import adaptation_of
from tlkit.datamodules import ImageFolderDataModule, write_shards

DDP = ["--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.strategy=ddp"]
SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2"]


def family_args(family: str, tiny_bert: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The run name and the arguments of one shipped config made small."""
    if family == "classification":
        config = "digits_finetune.yaml"
        extra = TINY_IMAGE_MODEL
    elif family == "text":
        config = "text_gradual_unfreezing.yaml"
        # Temperature scaling too: its validation predictions are gathered from both ranks, which fit one value.
        extra = [
            f"--model.init_args.backbone=hf:{tiny_bert}",
            "--data.init_args.labels_per_class=8",
            "--model.init_args.temperature_scaling=true",
        ]
    elif family == "multilabel":
        config = "multidigits_multilabel.yaml"
        extra = [*TINY_IMAGE_MODEL, "--data.init_args.num_images=160"]
    elif family == "segmentation":  # both ranks render the bundled scenes into one folder at the same moment
        config = "digit_scenes_segmentation.yaml"
        extra = [*TINY_IMAGE_MODEL[:2], "--data.init_args.num_images=40", "--data.init_args.scene_size=32"]
        extra.append("--data.init_args.batch_size=8")
    elif family == "shards":  # LitData gives each rank its own chunks, read as from object storage
        config = "shards_finetune.yaml"
        images = write_image_folder(tmp_path / "images", per_class=16)
        write_shards(ImageFolderDataModule(str(images), image_size=32), tmp_path / "shards", chunk_bytes="4KB")
        extra = [
            *TINY_IMAGE_MODEL,
            f"--data.init_args.path=local:{tmp_path / 'shards'}",
            "--data.init_args.batch_size=4",
        ]
        extra += ["--data.init_args.num_workers=1", f"--data.init_args.cache_dir={tmp_path / 'cache'}"]
    elif family == "hf_streaming":  # each rank keeps every second row of one shuffled stream, padded to equal steps
        config = "hf_image_streaming.yaml"
        save_digit_dataset(tmp_path / "hf")  # train: 45 rows, an odd count
        extra = [*TINY_IMAGE_MODEL, f"--data.init_args.path={tmp_path / 'hf'}", "--data.init_args.revision=null"]
        extra += ["--data.init_args.splits={val: validation, test: validation}", "--data.init_args.batch_size=4"]
        extra += ["--data.init_args.num_workers=1"]
    elif family == "audio":  # clips padded per batch, each with its length; the LSTM reads each one's last frame
        config = "voices_speaker_id.yaml"
        extra = ["--data.init_args.batch_size=8"]
    elif family == "audio_domains":  # two domains' clips of different lengths joined into one batch on each rank
        config = "domain_adaptation/voices_dann.yaml"
        extra = ["--data.init_args.batch_size=8"]
    elif family == "detection":  # mAP gathers every rank's detections before COCO's evaluation
        config = "digit_scenes_detection.yaml"
        extra = [*TINY_IMAGE_MODEL[:2], "--data.init_args.num_images=40", "--data.init_args.scene_size=64"]
        extra.append("--data.init_args.batch_size=8")
    else:
        config = "domain_adaptation/digits_m_dann.yaml"
        extra = TINY_IMAGE_MODEL
    return Path(config).stem, shipped(config, *extra)


#: Per family: how many epochs (text: gradual unfreezing every 2 epochs, so both layers of the tiny BERT unfreeze),
#: and what must have trained besides the backbone.
EPOCHS = {
    "classification": 2,
    "text": 5,
    "domain_adaptation": 2,
    "multilabel": 2,
    "segmentation": 2,
    "detection": 2,
    "shards": 2,
    "hf_streaming": 2,
    "audio": 2,
    "audio_domains": 2,
}
MOVES = {
    "classification": "head.",
    "text": "head.",
    "domain_adaptation": "discriminator.",
    "multilabel": "head.",
    "segmentation": "head.fpn",
    "detection": "head.fcos",
    "shards": "head.",
    "hf_streaming": "head.",
    "audio": "head.",
    "audio_domains": "discriminator.",
}


FAMILIES = ["classification", "text", "domain_adaptation", "multilabel", "segmentation", "detection"]


@pytest.mark.parametrize("family", [*FAMILIES, "shards", "hf_streaming", "audio", "audio_domains"])
def test_a_two_device_run_with_the_progress_bar_finishes_with_equal_ranks(family, tiny_bert, tmp_path):
    name, args = family_args(family, tiny_bert, tmp_path)
    epochs = [f"--trainer.max_epochs={EPOCHS[family]}", *SHORT[1:]]
    ranks = [
        "--trainer.callbacks+=tests._rank_weights.SaveRankWeights",
        f"--trainer.callbacks.init_args.out_dir={tmp_path}",
    ]
    result = tlkit([*args, *DDP, *epochs, *ranks], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    # Every value logged per epoch is synchronised (Lightning warns of each one that is not, as no user should see).
    assert "sync_dist=True" not in result.stderr, result.stderr[-3000:]
    last = tmp_path / "logs" / name / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == EPOCHS[family] - 1
    assert not (tmp_path / "logs" / name / "version_1").exists()  # the second rank wrote into rank 0's folder
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, tensor in rank0["final"].items():
        assert torch.equal(tensor, rank1["final"][key]), key
    moved = [k for k in rank0["final"] if not torch.equal(rank0["initial"][k], rank0["final"][k])]
    assert any(k.startswith(MOVES[family]) for k in moved) and any(k.startswith("backbone.") for k in moved)
    if family == "domain_adaptation":  # epoch 0 trained source-only, epoch 1 adapted: ranks agreed through both
        adaptation = adaptation_of(torch.load(last, map_location="cpu", weights_only=True))
        assert adaptation.reference["epoch"] == 0.0 and [r["epoch"] for r in adaptation.epochs] == [0.0, 1.0]
        # The best val/safe_im epoch's target predictions (for `tlkit select --by consensus`), of both ranks.
        kept = torch.load(last.parents[1] / "target_predictions.pt", weights_only=True)
        assert kept["probabilities"].shape == (2 * 2 * 32, 10)  # 2 ranks x 2 validation batches of 32 target images
    if family == "text":
        assert rank0["trainable"] == ["layer.0", "layer.1"]  # two phase changes, each with the wrapper rebuilt
        assert float(rank0["final"]["calibration_temperature"]) != 1.0  # fitted, and equal on both ranks
    if family == "multilabel":
        assert not torch.all(rank0["final"]["task.thresholds"] == 0.5)  # fitted, and equal on both ranks
        assert float(rank0["final"]["calibration_temperature"]) != 1.0


def test_sigterm_stops_every_rank_of_a_two_device_run(tmp_path):
    """SIGTERM to the command a user started, while its two ranks train, validate or save: both ranks stop at one
    step, the command ends with status 143 and says how to continue, and the checkpoint to continue from is whole."""
    args = [*shipped("digits_finetune.yaml", *TINY_IMAGE_MODEL), *DDP, "--trainer.limit_val_batches=1"]
    # The progress bar writes for as long as the run trains: to a file, so no pipe fills and blocks it.
    log = (tmp_path / "stderr.txt").open("w+")
    process = start_tlkit(
        [*args, "--trainer.max_epochs=1000", "--trainer.limit_train_batches=3"], tmp_path, subprocess.DEVNULL, log
    )
    last = tmp_path / "logs" / "digits_finetune" / "version_0" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 60
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.exists(), "no checkpoint within 60 s"
        # A moment later the ranks are anywhere in an epoch: a step, validation, the next checkpoint's save.
        time.sleep(random.Random().uniform(0.0, 1.5))
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the run did not end within 30 s of SIGTERM") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM; continue from the newest checkpoint with --ckpt_path last" in stderr
    assert "Traceback" not in stderr
    # The checkpoint to continue from is whole (a save the signal interrupted would leave a partial file instead).
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["state_dict"] and checkpoint["optimizer_states"] and "loops" in checkpoint
    assert not list(last.parent.glob(".*.partial"))


def run_two_nodes(args: list[str], folder: Path) -> None:
    """``tlkit <args>`` as two nodes of one process each, simulated on this machine (torchrun --nnodes 2 against
    localhost, gloo), every process in a group of its own (killed, with its ranks, if the run hangs)."""
    torchrun = Path(TLKIT).with_name("torchrun")
    port = str(random.randint(20000, 40000))
    launch = [str(torchrun), "--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
    nodes = [
        subprocess.Popen(
            [*launch, f"--node_rank={rank}", "--no-python", str(TLKIT), *args],
            cwd=folder,
            env=console_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for rank in (0, 1)
    ]
    wait_for_all(nodes, timeout=120)


def test_two_nodes_under_torchrun_share_one_run_folder_and_end_with_equal_ranks(tmp_path):
    """Two simulated nodes through the console script and a shipped config: one run folder, checkpoints written
    once, ranks bitwise equal after gradual unfreezing's phase change. (Continuing it with ``--ckpt_path last`` on
    both nodes, checked by hand, doubles the test's time: each node's start-up is most of it.)"""
    args = shipped(
        "digits_gradual_unfreezing.yaml",
        *TINY_IMAGE_MODEL,
        "--trainer.max_epochs=3",  # gradual unfreezing every 2 epochs: one phase change
        *SHORT[1:],
        "--trainer.num_nodes=2",
        "--trainer.devices=1",
        "--trainer.accelerator=cpu",
        "--trainer.strategy=ddp",
        "--trainer.callbacks+=tests._rank_weights.SaveRankWeights",
        f"--trainer.callbacks.init_args.out_dir={tmp_path}",
    )
    run_two_nodes(args, tmp_path)
    runs = tmp_path / "logs" / "digits_gradual_unfreezing"
    assert [p.name for p in runs.iterdir()] == ["version_0"]  # no node made a folder of its own
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["trainable"] == rank1["trainable"] == ["layer4.0"]
    assert all(torch.equal(tensor, rank1["final"][key]) for key, tensor in rank0["final"].items())


def test_predict_on_two_nodes_writes_each_image_once_as_one_process_does(tmp_path, capfd, recwarn):
    """``tlkit predict`` as two simulated nodes on an odd number of images: each rank predicts its shard and rank 0
    writes every image exactly once, with what a one-process predict writes for it."""
    fit = [*shipped("digits_finetune.yaml", *TINY_IMAGE_MODEL), "--trainer.max_epochs=1", *SHORT[1:]]
    fit.append("--trainer.enable_progress_bar=false")
    run_here(fit, tmp_path)
    run = tmp_path / "logs" / "digits_finetune" / "version_0"
    images = write_image_folder(tmp_path / "incoming", classes=("3", "7"), per_class=4)
    (images / "7" / "3.png").unlink()  # 7 images: two ranks cannot split them evenly
    predict = [
        "predict",
        "--ckpt_path",
        str(run / "checkpoints" / "last.ckpt"),
        f"--data.init_args.predict_dir={images}",
    ]
    recwarn.clear()  # the fit's own
    one = run_here_captured(predict, tmp_path, capfd)  # the progress bar on, as a user runs it
    assert one.returncode == 0, one.stderr[-2000:]
    # No library warning (each names its source file), such as one about the run's checkpoint folder: predict writes
    # no checkpoint. (Deprecations are what Python's default filters keep from a console user.)
    shown = [w for w in recwarn if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    library_warnings = [f"{w.filename}: {w.message}" for w in shown if "site-packages" in w.filename]
    assert not library_warnings and "site-packages" not in one.stderr, library_warnings or one.stderr[-2000:]
    run_two_nodes([*predict, "--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp"], tmp_path)
    one_process, two_nodes = (
        list(csv.DictReader((run / "predictions" / name).open()))
        for name in ("predictions-last.csv", "predictions-last-1.csv")
    )
    assert len(two_nodes) == 7 and len({row["file"] for row in two_nodes}) == 7
    assert sorted(two_nodes, key=lambda row: row["file"]) == sorted(one_process, key=lambda row: row["file"])
