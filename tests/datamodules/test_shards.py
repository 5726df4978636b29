"""LitData shards: written from a datamodule by ``tlkit shards``, streamed back (a local folder, and one read as
LitData reads object storage), every sample once per epoch over two ranks, and a run crashed mid-epoch that
continues bitwise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests._console import TINY_IMAGE_MODEL, run_here, run_here_captured, shipped
from tests.conftest import write_image_folder
from tlkit.checkpoint import read_checkpoint
from tlkit.datamodules import ImageFolderDataModule, ShardsDataModule, write_shards
from tlkit.datamodules.shards import ShardRow
from tlkit.errors import ConfigError

litdata = pytest.importorskip("litdata")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, ImageFolderDataModule]:
    """Shards of 3 classes x 12 digit images, chunks of a few images each (so shuffling and ranks have chunks to
    share out), written by the command as a user would."""
    root = tmp_path_factory.mktemp("shards")
    images = write_image_folder(root / "images", per_class=12, size=16)
    source = ImageFolderDataModule(str(images))
    write_shards(source, root / "shards", chunk_bytes="2KB")
    return root / "shards", source


def test_shards_hold_every_split_with_its_targets_and_the_image_files_as_they_were(shards):
    folder, source = shards
    metadata = json.loads((folder / "tlkit.json").read_text())
    assert metadata["classes"] == ["0", "1", "2"] and metadata["target_kind"] == "class"
    assert metadata["splits"] == {name: len(split.samples) for name, split in source.splits.items()}
    for name, split in source.splits.items():
        assert np.load(folder / name / "targets.npy").tolist() == split.labels
        stored = litdata.StreamingDataset(str(folder / name))
        assert len(list((folder / name).glob("chunk-*.bin"))) > 1
        assert stored[3]["image"] == Path(split.samples[3]).read_bytes()  # the PNG file itself
    dm = ShardsDataModule(str(folder), image_size=16)
    dm.setup("fit")
    assert dm.classes == ["0", "1", "2"] and dm.splits["val"].labels == source.splits["val"].labels
    assert dm.splits["train"].samples[0].fingerprint() != ShardRow("train", 0, "other shards").fingerprint()
    for row in (0, 4):  # what predict reads, row by row (and what `tlkit rank` and the feature cache read)
        assert np.array_equal(
            np.asarray(dm.load_image(ShardRow("test", row))),
            np.asarray(source.load_image(source.splits["test"].samples[row])),
        )
    remote_refused = r"Expected local shards to predict their test split .*, but `path` is 'local:"
    with pytest.raises(ConfigError, match=remote_refused):
        remote = ShardsDataModule(f"local:{folder}")
        remote.setup("predict")
        remote.predict_dataloader()
    with pytest.raises(ConfigError, match=r"`output_dir` .* to be new or empty, but it holds files"):
        write_shards(source, folder)
    with pytest.raises(ConfigError, match=r"`labels_per_class` unset for shards"):
        ShardsDataModule(str(folder), labels_per_class=2)


def _rows_of_rank(rank: int, folder: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["SHARD_TEST_PORT"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from tlkit.datamodules.shard_stream import ShardStream

    stream = ShardStream(folder, None, seed=0, shuffle=True)
    loader = litdata.StreamingDataLoader(stream, batch_size=4, collate_fn=lambda batch: batch)
    rows = []
    for _ in range(2):  # one loader, two epochs: the second shuffles anew
        rows.append([int(np.asarray(image).sum()) for batch in loader for image, _ in batch])
    torch.save(rows, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_stream_every_sample_once_per_epoch(shards, tmp_path):
    folder, source = shards
    os.environ["SHARD_TEST_PORT"] = str(29500 + os.getpid() % 1000)
    mp.start_processes(_rows_of_rank, args=(str(folder / "train"), str(tmp_path)), nprocs=2, start_method="fork")
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # Each image by its pixel sum (the digits differ): every training image once per epoch, over both ranks.
    expected = sorted(int(np.asarray(source.load_image(p)).sum()) for p in source.splits["train"].samples)
    for epoch in range(2):
        assert sorted(rank0[epoch] + rank1[epoch]) == expected
    assert rank0[0] != rank0[1]  # reshuffled each epoch


RUN = [
    *shipped("shards_finetune.yaml", *TINY_IMAGE_MODEL),
    "--data.init_args.batch_size=4",
    "--trainer.max_epochs=2",
    "--checkpoint.every_n_train_steps=3",
    "--trainer.enable_model_summary=false",
]


def test_a_run_crashed_mid_epoch_on_remote_shards_continues_bitwise(shards, tmp_path, capfd):
    folder, _ = shards
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    # `local:` reads the folder as LitData reads object storage: chunks fetched into a cache as the stream needs them.
    data = [f"--data.init_args.path=local:{folder}", "--data.init_args.num_workers=2"]
    run_here([*RUN, *data, f"--data.init_args.cache_dir={straight / 'cache'}"], straight)
    killed_run = [*RUN, *data, f"--data.init_args.cache_dir={killed / 'cache'}"]
    # A crash in this process at step 10 (6 steps an epoch: in epoch 1, after step 9's checkpoint) leaves what a
    # SIGKILL leaves (the console-script kill is test_user_journey's): no save on the way out.
    crash = ["--trainer.callbacks+=tests._kill.CrashAtStep", "--trainer.callbacks.init_args.step=10"]
    with pytest.raises(RuntimeError, match="crashed at step 10"):
        run_here(killed_run + crash, killed)
    last = killed / "logs" / "shards_finetune" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 9
    resumed = run_here_captured([*killed_run, "--ckpt_path", "last"], killed, capfd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = torch.load(straight / last.relative_to(killed), weights_only=True)
    got = torch.load(last, weights_only=True)
    assert got["global_step"] == expected["global_step"] == 12 and got["epoch"] == 1
    for key, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][key]), key
    recorded = read_checkpoint(last).info.data_source
    assert recorded["source"] == "litdata" and recorded["path"] == f"local:{folder}"
    assert set(recorded["splits"]) == {"train", "val", "test"}
