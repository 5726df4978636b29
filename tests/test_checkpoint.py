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
    # One record under one key: the preprocessing the datamodule resolved and the run's config are in it.
    assert [key for key in checkpoint.contents if key.startswith("tlkit")] == ["tlkit"]
    assert "tlkit_data_config" not in checkpoint.contents["DigitsDataModule"]
    assert checkpoint.contents["tlkit"]["data_config"] == info.data_config
    assert "model:" in checkpoint.run_config and checkpoint.hyper_parameters["backbone"] == "test_resnet"
    assert CheckpointInfo.from_dict(info.to_dict()) == info


def test_a_schema_4_checkpoint_migrates_its_scattered_keys_into_the_record(fitted, tmp_path):
    """Before schema 5 the run config, the adaptation record and the preprocessing had keys of their own."""
    from tlkit.checkpoint import AdaptationRecord

    contents = torch.load(fitted, weights_only=True)
    info = info_of(contents)
    old = {k: v for k, v in info.to_dict().items() if k not in ("run_config", "adaptation", "data_config")}
    contents["tlkit"] = {**old, "schema_version": 4, "data_config": None}
    contents["tlkit_config"] = info.run_config
    contents["tlkit_adaptation"] = {"reference": {"val/im": 0.5}, "epochs": [{"val/im": 0.5}], "reference_epochs": 1}
    contents["DigitsDataModule"]["tlkit_data_config"] = info.data_config
    torch.save(contents, tmp_path / "schema4.ckpt")
    migrated = read_checkpoint(tmp_path / "schema4.ckpt").info
    assert migrated.schema_version == 4 and migrated.run_config == info.run_config
    assert migrated.data_config == info.data_config
    assert migrated.adaptation == AdaptationRecord({"val/im": 0.5}, ({"val/im": 0.5},), 1)


def test_a_checkpoint_of_the_layout_before_the_schema_still_loads(fitted, tmp_path):
    contents = torch.load(fitted, weights_only=True)
    old = info_of(contents).to_dict()  # the data config in the model's record, as schemas 0 and 1 kept it
    contents["tlkit_config"] = old.pop("run_config")  # the run config under a key of its own
    for key in ("schema_version", "task", "class_ids", "adaptation"):  # what tlkit wrote before the schema's number
        del old[key]
    contents["tlkit"] = old
    torch.save(contents, tmp_path / "old.ckpt")
    info = read_checkpoint(tmp_path / "old.ckpt").info
    assert info.schema_version == 0 and info.class_names == tuple(str(d) for d in range(10))
    assert "model:" in info.run_config
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
