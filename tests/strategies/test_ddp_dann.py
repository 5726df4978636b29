"""A 2-process CPU DDP run of DANN (gloo) keeps the ranks' weights bitwise identical while they train."""

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("ddp_dann.py")


def test_dann_ranks_stay_identical(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, tensor in rank0["final"].items():
        assert torch.equal(tensor, rank1["final"][name]), name
    moved = [k for k in rank0["final"] if not torch.equal(rank0["initial"][k], rank0["final"][k])]
    assert any(k.startswith("discriminator.") for k in moved) and any(k.startswith("backbone.") for k in moved)
