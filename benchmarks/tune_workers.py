"""`tlkit tune` with several workers on one study, end to end: three workers started at once, and a worker killed
with SIGKILL mid-trial then started again. The fast checks are in tests/test_tune.py; this runs the real processes
and the real heartbeat grace period.

    python benchmarks/tune_workers.py

A tiny random-init backbone on the bundled digits (2 epochs a trial): what is measured is the study, not accuracy.
Prints a table and writes benchmarks/results/tune_workers.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from _common import machine, parse_args, table, write_json

from tlkit.callbacks.trial_pruning import GRACE_SECONDS

REPO = Path(__file__).resolve().parents[1]
TLKIT = str(Path(sys.executable).with_name("tlkit"))
TINY = [
    "--model.init_args.backbone=test_resnet",
    "--model.init_args.weights=null",
    "--data.init_args.image_size=32",
    "--trainer.enable_progress_bar=false",
]
SCENARIOS = ("at_once", "killed")


def worker(folder: Path, storage: str, study: str, n_trials: int, args: argparse.Namespace) -> subprocess.Popen:
    command = [TLKIT, "tune", "--config", str(REPO / "configs" / "digits_finetune.yaml"), "--space", "space.yaml"]
    command += ["--n_trials", str(n_trials), "--storage", storage, "--study_name", study, "--", *TINY]
    command += [f"--trainer.max_epochs={args.epochs}", f"--data.init_args.labels_per_class={args.labels_per_class}"]
    return subprocess.Popen(
        command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def states(storage: str, study: str) -> list[str]:
    """Each trial's state, in order; none while the study does not exist yet."""
    try:
        return [t.state.name.lower() for t in optuna.load_study(study_name=study, storage=storage).get_trials()]
    except KeyError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3, help="workers started at once")
    parser.add_argument("--trials", type=int, default=4, help="trials of the study they share")
    parser.add_argument("--epochs", type=int, default=2, help="per trial")
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    # The smoke run is one worker on one trial (tests/test_tune.py starts two workers at once and kills one, with a
    # short grace period): it checks the script, not the study.
    args = parse_args(parser, {"workers": 1, "trials": 1, "epochs": 1, "labels_per_class": 2, "scenarios": ["at_once"]})
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root)
        space = {"model.init_args.optimizer.init_args.lr": {"low": 1e-4, "high": 1e-2, "log": True}}
        (folder / "space.yaml").write_text(yaml.safe_dump(space))
        storage = f"sqlite:///{folder / 'studies.db'}"

        if "at_once" in args.scenarios:
            started = time.perf_counter()
            workers = [worker(folder, storage, "at_once", args.trials, args) for _ in range(args.workers)]
            codes = [w.wait() for w in workers]
            seen = states(storage, "at_once")
            runs = sorted(p.name for p in (folder / "logs" / "digits_finetune").iterdir())
            results[f"{args.workers} workers at once"] = {"exit": codes, "trials": seen, "run_folders": runs}
            rows.append(
                [
                    f"{args.workers} workers at once, {args.trials} trials",
                    str(codes),
                    str(seen.count("complete")),
                    str(seen.count("fail")),
                    str(len(runs)),
                    f"{time.perf_counter() - started:.0f}",
                ]
            )
        if "killed" in args.scenarios:
            rows.append(killed_worker(folder, storage, args, results))
    print(f"\ntlkit tune workers, {machine()}\n")
    print(table(["scenario", "exit codes", "complete", "failed", "run folders", "wall s"], rows))
    path = write_json("tune_workers", results)
    print(f"\nWritten: {path}")


def killed_worker(folder: Path, storage: str, args: argparse.Namespace, results: dict) -> list[str]:
    """A worker SIGKILLed mid-trial, then started again: the trial is marked failed and the study goes on."""
    started = time.perf_counter()
    killed = worker(folder, storage, "killed", 2, args)
    while "running" not in states(storage, "killed"):
        time.sleep(0.5)
    time.sleep(3)  # inside the trial's run
    os.killpg(killed.pid, signal.SIGKILL)  # the worker and its trial's tlkit fit
    killed.wait()
    time.sleep(GRACE_SECONDS + 2)  # until the trial's heartbeat is stale
    again = worker(folder, storage, "killed", 2, args)
    code = again.wait()
    seen = states(storage, "killed")
    results["killed and started again"] = {"exit": code, "trials": seen}
    return [
        "1 worker SIGKILLed mid-trial, started again, 2 trials",
        str([-9, code]),
        str(seen.count("complete")),
        str(seen.count("fail")),
        "-",
        f"{time.perf_counter() - started:.0f}",
    ]


if __name__ == "__main__":
    main()
