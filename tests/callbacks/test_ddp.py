"""Under DDP (2 CPU processes, gloo) every rank holds bitwise-identical weights after each unfreeze, and the
unfrozen layers really train."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_unfreeze.py")


def run_ddp(out_dir: Path, *flags: str) -> tuple[dict, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out_dir), *flags], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(out_dir / "rank0.pt", weights_only=True), torch.load(out_dir / "rank1.pt", weights_only=True)


def max_rank_difference(rank0: dict, rank1: dict) -> float:
    return max((a - b).abs().max().item() for a, b in zip(rank0["final"].values(), rank1["final"].values()))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    return run_ddp(tmp_path_factory.mktemp("ddp"))


def test_ranks_stay_bitwise_identical_across_unfreezes(ddp_run):
    rank0, rank1 = ddp_run
    assert rank0["trainable"] == rank1["trainable"] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert max_rank_difference(rank0, rank1) == 0.0


def test_unfrozen_layers_really_change(ddp_run):
    rank0, _ = ddp_run
    for group in ("layer1.0", "layer2.0", "layer3.0", "layer4.0"):
        key = f"backbone.model.{group}.conv1.weight"
        assert not torch.equal(rank0["initial"][key], rank0["final"][key]), group
    stem = "backbone.model.conv1.0.weight"
    assert torch.equal(rank0["initial"][stem], rank0["final"][stem])  # never unfrozen in 3 epochs


def test_without_rebuilding_the_wrapper_ranks_diverge(tmp_path):
    rank0, rank1 = run_ddp(tmp_path, "--no-rebuild")
    assert max_rank_difference(rank0, rank1) > 0.0
