"""Hyperparameter search with `tlkit tune`: TPE with median pruning against random search at the same budget and
against the shipped config, on digits with 10 labels per class.

    python benchmarks/tuning.py [--trials 20] [--epochs 30] [--seeds 0 1 2]

Each search tunes the learning rate (1e-4 to 1e-2, log), the per-group decay (0.5 to 1) and the weight decay (1e-4
to 0.1, log) of `configs/digits_finetune.yaml` (EfficientNet-Lite0, ImageNet weights, 64 px, 10 labels per class,
augmentation on) for ``--epochs`` epochs, on val/acc; the best trial's best checkpoint (by val/acc) is then tested.
Reported per method: test accuracy of the chosen config over the seeds (the sampler's seed; every trial keeps the
config's seed_everything 0), wall time, and the share of the planned trial epochs that pruning saved (goal: at least
40%). Writes benchmarks/results/tuning.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import machine, mean_std, table, write_json

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "digits_finetune.yaml")
TLKIT = str(Path(sys.executable).with_name("tlkit"))
SPACE = {
    "model.init_args.optimizer.init_args.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "model.init_args.lr_decay": {"low": 0.5, "high": 1.0},
    "model.init_args.optimizer.init_args.weight_decay": {"low": 1e-4, "high": 0.1, "log": True},
}
METHODS = {
    "tpe + median pruning": ["--sampler", "tpe", "--pruner", "median"],
    "random search": ["--sampler", "random", "--pruner", "none"],
}


def test_accuracy(checkpoint: Path, folder: Path) -> float:
    """``tlkit test`` of ``checkpoint``: its test/acc."""
    out = subprocess.run(
        [TLKIT, "test", "--ckpt_path", str(checkpoint), "--trainer.enable_progress_bar=false"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    for line in out.stdout.splitlines():  # Lightning's results table: │ test/acc │ 0.8941... │
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 2 and cells[1] == "test/acc":
            return float(cells[2])
    raise RuntimeError(f"no test/acc in: {out.stdout[-1000:]}")


def best_checkpoint(run_dir: Path) -> Path:
    ranked = sorted(run_dir.glob("checkpoints/epoch*.ckpt"))
    return ranked[-1] if ranked else run_dir / "checkpoints" / "last.ckpt"


def search(method: str, seed: int, trials: int, epochs: int, folder: Path) -> dict:
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))
    started = time.perf_counter()
    command = [TLKIT, "tune", "--config", CONFIG, "--space", "space.yaml", "--n_trials", str(trials)]
    command += ["--metric", "val/acc", "--seed", str(seed), *METHODS[method], "--", f"--trainer.max_epochs={epochs}"]
    command += ["--trainer.enable_progress_bar=false"]
    subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    records = json.loads((folder / "tune" / "digits_finetune" / "trials.json").read_text())
    finished = [r for r in records if r["state"] in ("complete", "pruned")]
    best = max((r for r in finished if r["state"] == "complete"), key=lambda r: r["value"])
    ran = sum(r["epochs"] for r in finished)
    return {
        "test_acc": test_accuracy(best_checkpoint(Path(folder / best["run_dir"])), folder),
        "best_val_acc": best["value"],
        "seconds": seconds,
        "epochs_saved": 1.0 - ran / (len(finished) * epochs),
        "pruned": sum(r["state"] == "pruned" for r in finished),
        "params": best["params"],
    }


def shipped(epochs: int, folder: Path) -> dict:
    started = time.perf_counter()
    command = [
        TLKIT,
        "fit",
        "--config",
        CONFIG,
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
    ]
    subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    run_dir = folder / "logs" / "digits_finetune" / "version_0"
    return {"test_acc": test_accuracy(best_checkpoint(run_dir), folder), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "shipped"
        folder.mkdir()
        results["shipped config"] = [shipped(args.epochs, folder)]
        for method in METHODS:
            for seed in args.seeds:
                folder = Path(root) / f"{method.split()[0]}-{seed}"
                folder.mkdir()
                results.setdefault(method, []).append(search(method, seed, args.trials, args.epochs, folder))
                print(f"{method}, seed {seed}: {results[method][-1]}", flush=True)
                shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for method, runs in results.items():
        saved = [r["epochs_saved"] for r in runs if "epochs_saved" in r]
        rows.append(
            [
                method,
                mean_std([r["test_acc"] for r in runs], 100),
                f"{statistics.median(r['seconds'] for r in runs):.0f}",
                f"{100 * statistics.mean(saved):.0f}%" if saved else "-",
                str(len(runs)),
            ]
        )
    print(f"\nTuning digits (10 labels per class), {machine()}, {args.trials} trials of {args.epochs} epochs\n")
    print(table(["method", "test accuracy %", "wall s (median)", "trial epochs saved by pruning", "searches"], rows))
    path = write_json("tuning", {"trials": args.trials, "epochs": args.epochs, "seeds": args.seeds, "results": results})
    print(f"\nWritten: {path}")


if __name__ == "__main__":
    main()
