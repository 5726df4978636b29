"""Runs on two devices (2 CPU processes, gloo) through the console script with the defaults users get: the progress
bar on, every collective entered by every rank. Each shipped config family (classification, text, domain adaptation)
finishes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests._console import TINY_IMAGE_MODEL, shipped, tlkit

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
