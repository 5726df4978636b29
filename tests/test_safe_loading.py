"""A file a user hands tlkit is data, never code: for every command and argument that reads a file, one whose
unpickling would run code (here: create a marker file) is refused in one line naming it, and the code never runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests._console import REPO, TINY_IMAGE_MODEL, run_here_captured, shipped
from tlkit.checkpoint import load_file
from tlkit.errors import ConfigError
from tlkit.features import FeatureCache


class RunsCode:
    """Unpickled, it calls ``exec`` with a statement that creates ``marker``: what a hostile checkpoint can hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}, "tlkit": RunsCode(marker), "epoch": 0}, path)
    return path


FILE_ARGUMENTS = {
    "fit --ckpt_path": lambda f: shipped("digits_finetune.yaml", *TINY_IMAGE_MODEL, f"--ckpt_path={f}"),
    "test --ckpt_path": lambda f: ["test", f"--ckpt_path={f}"],
    "predict --ckpt_path": lambda f: ["predict", f"--ckpt_path={f}"],
    "export --ckpt_path": lambda f: ["export", f"--ckpt_path={f}", "--out_dir=exported"],
    "fit --model.init_args.weights": lambda f: shipped(
        "digits_finetune.yaml", "--model.init_args.backbone=test_resnet", f"--model.init_args.weights={f}"
    ),
    "fit --model.init_args.source_checkpoint (SHOT)": lambda f: shipped(
        "domain_adaptation/mnist_digits_shot.yaml",
        *TINY_IMAGE_MODEL[:1],
        f"--model.init_args.source_checkpoint={f}",
        "--trainer.fast_dev_run=true",
    ),
}


@pytest.mark.parametrize("argument", list(FILE_ARGUMENTS))
def test_a_file_whose_unpickling_runs_code_is_refused_in_one_line(argument, tmp_path, capfd):
    marker = tmp_path / "code_ran"
    hostile = hostile_checkpoint(tmp_path / "sent_to_you.ckpt", marker)
    result = run_here_captured(FILE_ARGUMENTS[argument](hostile), tmp_path, capfd)
    assert result.returncode == 2, result.stderr[-3000:]
    assert not marker.exists(), "the file's code ran"
    # The error and the hint for a traceback, after whatever Lightning printed while setting up (SHOT reads its
    # source model when the fit starts).
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    lines = lines[next(i for i, line in enumerate(lines) if ": error: " in line) :]
    assert len(lines) <= 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert str(hostile) in lines[0] and "would run code (exec)" in lines[0], lines
    assert not list(tmp_path.glob("logs/*/version_*")) and not (tmp_path / "exported").exists()  # nothing left


def test_cached_features_are_read_as_data_only(tmp_path):
    from tlkit.backbones import Backbone

    backbone = Backbone("test_resnet", weights=None)
    cache = FeatureCache("disk", tmp_path / "cache")
    marker = tmp_path / "code_ran"
    planted = tmp_path / "cache" / f"{cache.key(backbone, 'digits-train', 'eval')}.pt"
    planted.parent.mkdir()
    torch.save({"features": RunsCode(marker), "labels": torch.zeros(1)}, planted)
    dataset = torch.utils.data.TensorDataset(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"would run code \(exec\); tlkit never runs code from a file"):
        cache.dataset(backbone, dataset, data_key="digits-train", transform="eval")
    assert not marker.exists()


def test_the_loader_refuses_code_and_reads_tensors(tmp_path):
    marker = tmp_path / "code_ran"
    with pytest.raises(ConfigError, match=r"^Expected `ckpt_path` '.*evil.ckpt' to hold only tensors and plain data"):
        load_file(hostile_checkpoint(tmp_path / "evil.ckpt", marker), "ckpt_path")
    assert not marker.exists()
    torch.save({"weight": torch.ones(2), "names": ["a", "b"]}, tmp_path / "plain.pt")
    assert load_file(tmp_path / "plain.pt", "weights")["names"] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"`weights` to be a torch file, but got '.*pyproject.toml \(unreadable"):
        load_file(REPO / "pyproject.toml", "weights")


def test_a_checkpoint_naming_its_own_instantiator_is_refused_in_one_line(tmp_path, capfd):
    """Hyperparameters may name the function that builds the model; only LightningCLI's is trusted (Lightning's
    allowlist), anything else is code the file chose: one line, for export as for every command reading it."""
    from tlkit.strategies import FineTuning

    model = FineTuning("test_resnet", weights=None, num_classes=3)
    checkpoint = tmp_path / "sent_to_you.ckpt"
    hyper_parameters = {**dict(model.hparams), "_instantiator": "os.system", "_class_path": "os.system"}
    info = {"strategy": "tlkit.strategies.fine_tuning.FineTuning", "schema_version": 4}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyper_parameters, "tlkit": info}, checkpoint)
    result = run_here_captured(["export", f"--ckpt_path={checkpoint}", "--out_dir=exported"], tmp_path, capfd)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "hyperparameters name 'os.system'; tlkit never runs code a file names" in lines[0]
