"""Hyperparameter search with `tlkit tune`: TPE with median pruning against random search at the same budget and
against the shipped config, on digits with 10 labels per class and on Rotten Tomatoes with 100 per class.

    python benchmarks/tuning.py [--datasets digits rotten-tomatoes] [--trials 20] [--epochs N] [--seeds 0 1 2]

Each search tunes the learning rate, the per-group decay and the weight decay (SPACES) of the dataset's shipped
config (`configs/digits_finetune.yaml`: EfficientNet-Lite0, ImageNet weights, 64 px, augmentation on;
`configs/text_finetune.yaml`: all-MiniLM-L6-v2, 64 tokens) for ``--epochs`` epochs (default: the config's), on
val/acc; the best trial's best checkpoint (by val/acc) is then tested. Reported per dataset and method: test accuracy
of the chosen config over the seeds (the sampler's seed; every trial keeps the config's seed_everything 0), wall
time, and the share of the planned trial epochs that pruning saved (goal: at least 40%). Writes
benchmarks/results/tuning.json.
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
from _common import machine, mean_std, parse_args, smoke, table, write_json

REPO = Path(__file__).resolve().parents[1]
TLKIT = str(Path(sys.executable).with_name("tlkit"))
#: dataset -> (its shipped config, the run name the config's runs are logged under)
DATASETS = {
    "digits": (REPO / "configs" / "digits_finetune.yaml", "digits_finetune"),
    "rotten-tomatoes": (REPO / "configs" / "text_finetune.yaml", "text_finetune"),
}
#: Around each config's own values (digits: lr 3e-3, decay 0.75, weight decay 0.01; text: lr 5e-4, decay 0.5).
SPACES = {
    "digits": {
        "model.init_args.optimizer.init_args.lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "model.init_args.lr_decay": {"low": 0.5, "high": 1.0},
        "model.init_args.optimizer.init_args.weight_decay": {"low": 1e-4, "high": 0.1, "log": True},
    },
    "rotten-tomatoes": {
        "model.init_args.optimizer.init_args.lr": {"low": 5e-5, "high": 5e-3, "log": True},
        "model.init_args.lr_decay": {"low": 0.3, "high": 1.0},
        "model.init_args.optimizer.init_args.weight_decay": {"low": 1e-4, "high": 0.1, "log": True},
    },
}
METHODS = {
    "tpe + median pruning": ["--sampler", "tpe", "--pruner", "median"],
    "random search": ["--sampler", "random", "--pruner", "none"],
}
#: Options every fit and trial gets: a smoke run's small random backbone and few images (none otherwise).
OVERRIDES: list[str] = []
SMOKE_OVERRIDES = [
    "--model.init_args.backbone=test_resnet",
    "--model.init_args.weights=null",
    "--data.init_args.image_size=32",
    "--data.init_args.labels_per_class=2",
]


def tlkit(args: list[str], folder: Path) -> str:
    """``tlkit <args>`` in ``folder``; what it printed. A process of its own, as a user runs it; in this process
    for a smoke run (seconds of imports saved per command; `tlkit tune`'s trials are processes of their own)."""
    if not smoke():
        return subprocess.run([TLKIT, *args], cwd=folder, capture_output=True, text=True, check=True).stdout
    import contextlib
    import io

    from tlkit.cli import main as tlkit_main

    printed = io.StringIO()
    with contextlib.chdir(folder), contextlib.redirect_stdout(printed):
        tlkit_main(args)
    return printed.getvalue()


def test_accuracy(checkpoint: Path, folder: Path) -> float:
    """``tlkit test`` of ``checkpoint``: its test/acc."""
    printed = tlkit(["test", "--ckpt_path", str(checkpoint), "--trainer.enable_progress_bar=false"], folder)
    for line in printed.splitlines():  # Lightning's results table: │ test/acc │ 0.8941... │
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 2 and cells[1] == "test/acc":
            return float(cells[2])
    raise RuntimeError(f"no test/acc in: {printed[-1000:]}")


def best_checkpoint(run_dir: Path) -> Path:
    ranked = sorted(run_dir.glob("checkpoints/epoch*.ckpt"))
    return ranked[-1] if ranked else run_dir / "checkpoints" / "last.ckpt"


def configured_epochs(dataset: str) -> int:
    return int(yaml.safe_load(DATASETS[dataset][0].read_text())["trainer"]["max_epochs"])


def search(dataset: str, method: str, seed: int, trials: int, epochs: int, folder: Path) -> dict:
    config, name = DATASETS[dataset]
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACES[dataset]))
    started = time.perf_counter()
    command = ["tune", "--config", str(config), "--space", "space.yaml", "--n_trials", str(trials)]
    command += ["--metric", "val/acc", "--seed", str(seed), *METHODS[method], "--", f"--trainer.max_epochs={epochs}"]
    tlkit([*command, "--trainer.enable_progress_bar=false", *OVERRIDES], folder)
    seconds = time.perf_counter() - started
    records = json.loads((folder / "tune" / name / "trials.json").read_text())
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


def shipped(dataset: str, epochs: int, folder: Path) -> dict:
    config, name = DATASETS[dataset]
    started = time.perf_counter()
    command = ["fit", "--config", str(config), f"--trainer.max_epochs={epochs}"]
    tlkit([*command, "--trainer.enable_progress_bar=false", *OVERRIDES], folder)
    seconds = time.perf_counter() - started
    run_dir = folder / "logs" / name / "version_0"
    return {"test_acc": test_accuracy(best_checkpoint(run_dir), folder), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=None, help="per trial (default: the config's max_epochs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parse_args(
        parser, {"datasets": ["digits"], "trials": 1, "epochs": 1, "seeds": [0], "methods": ["tpe + median pruning"]}
    )
    if smoke():
        OVERRIDES.extend(SMOKE_OVERRIDES)
    results: dict[str, dict[str, list[dict]]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for dataset in args.datasets:
            epochs = args.epochs or configured_epochs(dataset)
            runs = results.setdefault(dataset, {})
            folder = Path(root) / f"{dataset}-shipped"
            folder.mkdir()
            runs["shipped config"] = [shipped(dataset, epochs, folder)]
            for method in args.methods:
                for seed in args.seeds:
                    folder = Path(root) / f"{dataset}-{method.split()[0]}-{seed}"
                    folder.mkdir()
                    runs.setdefault(method, []).append(search(dataset, method, seed, args.trials, epochs, folder))
                    print(f"{dataset}, {method}, seed {seed}: {runs[method][-1]}", flush=True)
                    shutil.rmtree(folder, ignore_errors=True)
            for method, measured in runs.items():
                saved = [r["epochs_saved"] for r in measured if "epochs_saved" in r]
                rows.append(
                    [
                        dataset,
                        method,
                        mean_std([r["test_acc"] for r in measured], 100),
                        f"{statistics.median(r['seconds'] for r in measured):.0f}",
                        f"{100 * statistics.mean(saved):.0f}%" if saved else "-",
                        str(len(measured)),
                    ]
                )
    epochs = args.epochs or "the config's"
    print(f"\nTuning, {machine()}, {args.trials} trials of {epochs} epochs, seeds {args.seeds}\n")
    header = ["dataset", "method", "test accuracy %", "wall s (median)", "trial epochs saved by pruning", "searches"]
    print(table(header, rows))
    settings = {"trials": args.trials, "epochs": args.epochs, "seeds": args.seeds}
    path = write_json("tuning", {**settings, "results": results})
    print(f"\nWritten: {path}")


if __name__ == "__main__":
    main()
