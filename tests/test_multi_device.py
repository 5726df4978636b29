"""Runs on two devices (2 CPU processes, gloo) through the console script with the defaults users get: the progress
bar on, every collective entered by every rank. Each shipped config family (classification, text, domain adaptation)
finishes."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests._console import TINY_IMAGE_MODEL, shipped, start_tlkit, tlkit

DDP = ["--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.strategy=ddp"]
SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2"]


def family_args(family: str, tiny_bert: Path) -> tuple[str, list[str]]:
    """The run name and the arguments of one shipped config made small."""
    if family == "classification":
        config = "digits_finetune.yaml"
        extra = TINY_IMAGE_MODEL
    elif family == "text":
        config = "text_gradual_unfreezing.yaml"
        extra = [f"--model.init_args.backbone=hf:{tiny_bert}", "--data.init_args.labels_per_class=8"]
    else:
        config = "domain_adaptation/digits_m_dann.yaml"
        extra = TINY_IMAGE_MODEL
    return Path(config).stem, shipped(config, *extra)


@pytest.mark.parametrize("family", ["classification", "text", "domain_adaptation"])
def test_a_two_device_run_with_the_progress_bar_finishes(family, tiny_bert, tmp_path):
    name, args = family_args(family, tiny_bert)
    result = tlkit([*args, *DDP, *SHORT], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    last = tmp_path / "logs" / name / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "logs" / name / "version_1").exists()  # the second rank wrote into rank 0's folder


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
