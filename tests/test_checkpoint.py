"""The checkpoint schema: what every fit records, read back the same; checkpoints of the layout before the schema had
a number still load; one of a newer schema is refused in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import TINY_FIT_ARGS
from tlkit.checkpoint import SCHEMA_VERSION, CheckpointInfo, info_of, read_checkpoint, write_info
from tlkit.cli import TLKitCLI
from tlkit.engines.export import load_strategy
from tlkit.errors import ConfigError


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    args = [*TINY_FIT_ARGS, "--trainer.max_epochs=1", f"--trainer.default_root_dir={folder}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        TLKitCLI(args=["fit", *args])
    return folder / "logs" / "tlkit" / "version_0" / "checkpoints" / "last.ckpt"


def test_a_fit_records_the_schema_and_reads_it_back(fitted):
    checkpoint = read_checkpoint(fitted)
    info = checkpoint.info
    assert info.schema_version == SCHEMA_VERSION
    assert info.strategy == "tlkit.strategies.fine_tuning.FineTuning"
    assert info.class_names == tuple(str(d) for d in range(10)) and isinstance(info.seed, int)
    assert info.optimizer == "torch.optim.adamw.AdamW" and info.lr_scheduler is None
    assert info.data_config["image_size"] == 32 and len(info.data_config["mean"]) == 3
    # The datamodule, which resolved the preprocessing, records it; the model's record leaves it out.
    assert checkpoint.contents["tlkit"]["data_config"] is None
    assert checkpoint.contents["DigitsDataModule"]["tlkit_data_config"] == info.data_config
    assert "model:" in checkpoint.run_config and checkpoint.hyper_parameters["backbone"] == "test_resnet"
    assert CheckpointInfo.from_dict(info.to_dict()) == info


def test_a_checkpoint_of_the_layout_before_the_schema_still_loads(fitted, tmp_path):
    contents = torch.load(fitted, weights_only=True)
    old = info_of(contents).to_dict()  # the data config in the model's record, as schemas 0 and 1 kept it
    del old["schema_version"], old["task"]  # exactly what tlkit wrote before the schema had a number
    contents["tlkit"] = old
    del contents["DigitsDataModule"]["tlkit_data_config"]
    torch.save(contents, tmp_path / "old.ckpt")
    info = read_checkpoint(tmp_path / "old.ckpt").info
    assert info.schema_version == 0 and info.class_names == tuple(str(d) for d in range(10))
    model = load_strategy(tmp_path / "old.ckpt")
    assert model.class_names == [str(d) for d in range(10)] and model.trained_data_config.image_size == 32


def test_a_checkpoint_of_a_newer_schema_is_refused_in_one_line(fitted, tmp_path):
    contents = torch.load(fitted, weights_only=True)
    write_info(contents, dataclasses.replace(info_of(contents), schema_version=SCHEMA_VERSION + 1))
    torch.save(contents, tmp_path / "newer.ckpt")
    with pytest.raises(
        ConfigError,
        match=rf"schema up to {SCHEMA_VERSION}, but got {SCHEMA_VERSION + 1}: it was written by a newer tlkit; upgrade",
    ):
        read_checkpoint(tmp_path / "newer.ckpt")
