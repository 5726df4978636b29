"""Streamed Hugging Face datasets (``streaming: true``) from Parquet files that `datasets` wrote: the same targets and
images as the downloaded dataset, every row once per epoch over two ranks with equal steps, a run crashed mid-epoch
that continues bitwise, and what a stream cannot do refused in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._console import TINY_IMAGE_MODEL, run_here, run_here_captured, shipped
from tests._hf_data import NAMES, save_digit_dataset
from tlkit.checkpoint import read_checkpoint
from tlkit.datamodules import HuggingFaceImageDataModule, sampling
from tlkit.errors import ConfigError

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def no_pause_after_parquet_streams(monkeypatch):
    """`datasets` sleeps 5 s after each shuffled Parquet stream ends (a guard against a pyarrow crash at interpreter
    exit, apache/arrow#45214): once an epoch in a real run, most of the time here."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The digit dataset (train 45 rows, validation 15) as the Parquet files ``Dataset.to_parquet`` writes (its
    ClassLabels kept in the file's metadata), and the ``data_files`` that name them."""
    root = tmp_path_factory.mktemp("hf_stream")
    data = save_digit_dataset(root / "saved")
    files = {}
    for split, table in data.items():
        table.to_parquet(str(root / f"{split}.parquet"))
        files[split] = str(root / f"{split}.parquet")
    return root, files


def streamed(files: dict[str, str], **arguments) -> HuggingFaceImageDataModule:
    arguments = {"image_size": 16, "batch_size": 4, "test_fraction": 0.0, "shuffle_buffer": 8, **arguments}
    return HuggingFaceImageDataModule("parquet", data_files=files, streaming=True, **arguments)


@pytest.mark.parametrize(
    "targets",
    [{}, {"label_column": "tags", "multi_label": True}, {"target_columns": ["value"]}],
    ids=["class", "label sets", "numbers"],
)
def test_streamed_rows_are_the_downloaded_rows_with_their_targets(parquet, targets):
    root, files = parquet
    stream = streamed(files, **targets)
    stream.setup("fit")
    downloaded = HuggingFaceImageDataModule(str(root / "saved"), image_size=16, test_fraction=0.0, **targets)
    downloaded.setup("fit")
    assert stream.classes == downloaded.classes and stream.target_kind == downloaded.target_kind
    for split in ("train", "val"):  # read at setup, in one pass over the target columns
        assert np.array_equal(np.asarray(stream.splits[split].labels), np.asarray(downloaded.splits[split].labels))
    # Evaluation streams the split in order: each row's image and target as the downloaded dataset gives them.
    images, labels = zip(*((x, y) for batch_x, batch_y in stream.val_dataloader() for x, y in zip(batch_x, batch_y)))
    expected = downloaded.val_dataloader()
    want_images, want_labels = zip(*((x, y) for batch_x, batch_y in expected for x, y in zip(batch_x, batch_y)))
    assert all(torch.equal(a, b) for a, b in zip(images, want_images))
    assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(labels, want_labels))
    record = stream.data_source()
    assert record["path"] == "parquet" and record["rows"] == {"train": 45, "val": 15}


def _rows_of_rank(stream: HuggingFaceImageDataModule, rank: int, epoch: int, monkeypatch) -> list[str]:
    """What rank ``rank`` of two reads in ``epoch``: each row by its image bytes' hash."""
    monkeypatch.setattr(sampling, "_world", lambda: (2, rank))
    loader = stream.train_dataloader()
    loader.sampler.set_epoch(epoch)
    rows = [hashlib.sha256(index.row["image"]["bytes"]).hexdigest() for index in loader.sampler]
    assert len(rows) == len(loader.sampler) == 23  # 45 rows: 23 and 22, the second padded with its first row
    return rows


def test_two_ranks_read_every_row_once_per_epoch_and_take_equal_steps(parquet, monkeypatch):
    _, files = parquet
    stream = streamed(files)
    stream.setup("fit")
    table = datasets.Dataset.from_parquet(files["train"]).cast_column("image", datasets.Image(decode=False))
    every_row = sorted(hashlib.sha256(row["image"]["bytes"]).hexdigest() for row in table)
    orders = []
    for epoch in (0, 1):
        rank0, rank1 = (_rows_of_rank(stream, rank, epoch, monkeypatch) for rank in (0, 1))
        assert rank1[-1] == rank1[0]  # the padding
        assert sorted(rank0 + rank1[:-1]) == every_row
        orders.append(rank0)
    assert orders[0] != orders[1]  # reshuffled each epoch


def test_a_loader_restored_mid_epoch_gives_the_rest_of_the_epoch_as_it_was(parquet):
    _, files = parquet
    first = streamed(files)
    first.setup("fit")
    loader = first.train_dataloader()
    batches = iter(loader)
    seen = [next(batches) for _ in range(5)]
    state = first.state_dict()
    rest = list(batches)
    resumed = streamed(files)
    resumed.load_state_dict(state)
    resumed.setup("fit")
    again = list(resumed.train_dataloader())
    assert len(seen) + len(rest) == 12 and len(again) == len(rest)
    for (x, y), (x2, y2) in zip(rest, again):  # images augmented as before, with the same targets
        assert torch.equal(x, x2) and torch.equal(y, y2)


RUN = [
    *shipped("hf_image_streaming.yaml", *TINY_IMAGE_MODEL),
    "--data.init_args.path=parquet",
    "--data.init_args.revision=null",
    "--data.init_args.splits={val: validation, test: validation}",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=2",
    "--trainer.max_epochs=2",
    "--trainer.limit_val_batches=2",
    "--checkpoint.every_n_train_steps=4",
    "--trainer.enable_model_summary=false",
]


def test_a_run_crashed_mid_epoch_continues_bitwise_and_predicts_each_row_once(parquet, tmp_path, capfd):
    _, files = parquet
    data = [f"--data.init_args.data_files={json.dumps(files)}"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    run_here([*RUN, *data], straight)
    # 12 steps an epoch: a crash at step 18 (epoch 1, after step 16's checkpoint) saves nothing on the way out.
    crash = ["--trainer.callbacks+=tests._kill.CrashAtStep", "--trainer.callbacks.init_args.step=18"]
    with pytest.raises(RuntimeError, match="crashed at step 18"):
        run_here([*RUN, *data, *crash], killed)
    last = killed / "logs" / "hf_image_streaming" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 16
    resumed = run_here_captured([*RUN, *data, "--ckpt_path", "last"], killed, capfd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = torch.load(straight / last.relative_to(killed), weights_only=True)
    got = torch.load(last, weights_only=True)
    assert got["global_step"] == expected["global_step"] == 24 and got["epoch"] == 1
    for key, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][key]), key
    info = read_checkpoint(last).info
    assert info.class_names == tuple(NAMES) and info.data_source["rows"] == {"train": 45, "val": 15, "test": 15}
    predict = ["predict", "--config", str(last.parents[1] / "config.yaml"), f"--ckpt_path={last}"]
    result = run_here_captured(predict, killed, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    written = next(killed.glob("logs/hf_image_streaming/version_0/predictions/*.jsonl")).read_text().splitlines()
    assert [json.loads(line)["file"] for line in written] == [f"validation/{i}" for i in range(15)]


def test_what_a_stream_cannot_do_is_one_line(parquet):
    _, files = parquet
    with pytest.raises(
        ConfigError,
        match=r"Expected a test split of 'parquet' to stream, but it has none: .* "
        r"`test_fraction: 0`",
    ):
        streamed(files, test_fraction=0.15).setup("fit")
    with pytest.raises(ConfigError, match=r"`labels_per_class` unset with `streaming: true`"):
        streamed(files, labels_per_class=2)
    dm = streamed(files)
    dm.setup("fit")
    with pytest.raises(ConfigError, match=r"asked for row 3 on its own: set `streaming: false`") as error:
        dm.dataset("train", train=False)[3]  # what `tlkit rank` does
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"`image_column` 'value' of 'parquet' split 'train' to hold images"):
        streamed(files, image_column="value").setup("fit")


def test_a_broken_image_met_in_the_stream_names_its_row(parquet, tmp_path):
    root, files = parquet
    table = datasets.Dataset.from_parquet(files["validation"]).cast_column("image", datasets.Image(decode=False))
    broken = table.map(
        lambda row, i: {
            "image": {"bytes": row["image"]["bytes"][:40] if i == 2 else row["image"]["bytes"], "path": None}
        },
        with_indices=True,
    )
    broken.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "validation.parquet"))
    dm = streamed({"train": files["train"], "validation": str(tmp_path / "validation.parquet")})
    dm.setup("fit")
    with pytest.raises(ConfigError, match=r"split 'validation', streamed row 2 .* is not one .* `streaming: false`"):
        list(dm.val_dataloader())
