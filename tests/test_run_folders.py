"""Run folders that two runs started at once never share: reserved with an exclusive mkdir, released on failure."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch
import yaml

from tests._console import TINY_IMAGE_MODEL, shipped, start_tlkit
from tlkit.cli.run_folders import VERSION_ENV, is_launched_rank, reserve, reserve_for_run


def _reserve_in(root: str, start, queue) -> None:
    start.wait()  # every process lists the folder at about the same moment
    queue.put(reserve(Path(root)).number)


def test_processes_reserving_at_once_each_get_their_own_folder(tmp_path):
    context = multiprocessing.get_context("spawn")
    start, queue = context.Event(), context.Queue()
    workers = [context.Process(target=_reserve_in, args=(str(tmp_path), start, queue)) for _ in range(6)]
    for worker in workers:
        worker.start()
    start.set()
    numbers = sorted(queue.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join()
    assert numbers == list(range(6))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"version_{n}" for n in range(6)]


def test_a_taken_number_is_skipped_and_a_launched_rank_reuses_rank_0s(tmp_path, monkeypatch):
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_3").mkdir()
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    reservation = reserve_for_run(tmp_path)
    assert reservation.number == 4 and os.environ[VERSION_ENV] == "4"
    monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning sets in the rank it starts
    assert reserve_for_run(tmp_path).folder == reservation.folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["version_0", "version_3", "version_4"]


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"])
def test_every_rank_but_the_first_of_a_launch_reserves_nothing(variable, tmp_path, monkeypatch):
    """Lightning's launcher, torchrun (a node's first process has GROUP_RANK set) and srun (SLURM_PROCID, set in
    every task of a multi-node job): only global rank 0 creates the run folder."""
    for name in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "0")
    assert not is_launched_rank()
    monkeypatch.setenv(variable, "3")
    assert is_launched_rank()
    reserve_for_run(tmp_path)
    assert not any(tmp_path.iterdir())


def test_releasing_removes_only_what_the_reservation_created_and_never_a_checkpoint(tmp_path):
    unused = reserve(tmp_path / "logs" / "run")
    unused.release()
    assert not (tmp_path / "logs").exists()
    kept = reserve(tmp_path / "logs" / "run")
    (kept.folder / "checkpoints").mkdir()
    (kept.folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    kept.release()
    assert (kept.folder / "checkpoints" / "last.ckpt").is_file()


def test_two_fits_of_one_config_started_together_write_to_two_folders(tmp_path):
    args = shipped(
        "digits_finetune.yaml", *TINY_IMAGE_MODEL, "--data.init_args.labels_per_class=3", "--trainer.max_epochs=1"
    )
    started = [start_tlkit(args, tmp_path) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in started]
    assert all(process.returncode == 0 for process in started), [err[-2000:] for _, err in outputs]
    runs = tmp_path / "logs" / "digits_finetune"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    for run in runs.iterdir():
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("last")) == ["last.ckpt"]
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
        # The saved config leaves the version open: a run started from it reserves a folder of its own.
        assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"]["init_args"]["version"] is None
    printed = " ".join(err for _, err in outputs) + " ".join(out for out, _ in outputs)
    assert "version_0" in printed and "version_1" in printed
