"""2-process CPU DDP runs (gloo) of SelfTraining (mean teacher, distribution alignment) and SHOT (pseudo-labels
computed on every rank) keep the ranks' weights bitwise identical while they train. (DANN's is the console-script run
of its shipped config in tests/test_multi_device.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tlkit.strategies import SourceOnly

SCRIPT = Path(__file__).with_name("ddp_domain_adaptation.py")
# What must have trained in each: a part only that strategy has, and the backbone.
MOVES = {"SelfTraining": "teacher.", "SHOT": "backbone."}


def source_checkpoint(tmp_path: Path) -> str:
    model = SourceOnly("test_efficientnet", weights=None, num_classes=10)
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return str(path)


@pytest.mark.parametrize("strategy", list(MOVES))
def test_ranks_stay_identical(strategy, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    args = [sys.executable, str(SCRIPT), str(tmp_path), strategy]
    if strategy == "SHOT":
        args.append(source_checkpoint(tmp_path))
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, tensor in rank0["final"].items():
        assert torch.equal(tensor, rank1["final"][name]), name
    moved = [k for k in rank0["final"] if not torch.equal(rank0["initial"][k], rank0["final"][k])]
    assert any(k.startswith(MOVES[strategy]) for k in moved) and any(k.startswith("backbone.") for k in moved)
    if strategy == "SHOT":
        assert torch.equal(rank0["pseudo_labels"], rank1["pseudo_labels"])
        assert not any(k.startswith("head.") for k in moved)  # the source classifier stays frozen
