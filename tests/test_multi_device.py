"""Runs on two devices (2 CPU processes, gloo) through the console script with the defaults users get: the progress
bar on, every collective entered by every rank. Each shipped config family (classification, text, domain adaptation)
finishes, and SIGTERM ends a run on every rank with a status that says so."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests._console import REPO, TLKIT, console_env, tlkit

DDP = ["--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.strategy=ddp"]
SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2"]
TINY_IMAGE_MODEL = ["--model.init_args.backbone=test_resnet", "--model.init_args.weights=null"]


def family_args(family: str, tiny_bert: Path) -> tuple[str, list[str]]:
    """The run name and the arguments of one shipped config made small."""
    if family == "classification":
        config = "digits_finetune.yaml"
        extra = [*TINY_IMAGE_MODEL, "--data.init_args.image_size=32"]
    elif family == "text":
        config = "text_gradual_unfreezing.yaml"
        extra = [f"--model.init_args.backbone=hf:{tiny_bert}", "--data.init_args.labels_per_class=8"]
    else:
        config = "domain_adaptation/digits_m_dann.yaml"
        extra = TINY_IMAGE_MODEL
    return Path(config).stem, ["fit", "--config", str(REPO / "configs" / config), *extra]


def group_ends(group: int, within: float) -> bool:
    """Whether every process of the process group ``group`` has ended within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.25)
    return False


@pytest.mark.parametrize("family", ["classification", "text", "domain_adaptation"])
def test_a_two_device_run_with_the_progress_bar_finishes(family, tiny_bert, tmp_path):
    name, args = family_args(family, tiny_bert)
    result = tlkit([*args, *DDP, *SHORT], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    last = tmp_path / "logs" / name / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "logs" / name / "version_1").exists()  # the second rank wrote into rank 0's folder


def test_sigterm_ends_every_rank_of_a_two_device_run(tiny_bert, tmp_path):
    _, args = family_args("classification", tiny_bert)
    process = subprocess.Popen(
        [str(TLKIT), *args, *DDP, "--trainer.max_epochs=1000"],
        cwd=tmp_path,
        env=console_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    last = tmp_path / "logs" / "digits_finetune" / "version_0" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 90
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert last.exists(), "no epoch ended within 90 s"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
        assert "stopped by SIGTERM" in stderr and "--ckpt_path last" in stderr
        assert group_ends(process.pid, within=20), "a rank is still running 20 s after rank 0 ended"
        assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] >= 0
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
