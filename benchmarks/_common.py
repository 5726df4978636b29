"""Helpers shared by the benchmark scripts: machine description, Markdown tables, JSON results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import lightning as L
import torch

#: Where results go: benchmarks/results/, or the folder this variable names (the smoke runs of the test suite write
#: there, so that a smoke run never replaces a measured result).
RESULTS_ENV = "TLKIT_BENCH_RESULTS"
DEFAULT_RESULTS = Path(__file__).parent / "results"


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV, DEFAULT_RESULTS))


#: Set by ``--smoke``: every `quiet_trainer` runs a few batches an epoch.
SMOKE_BATCHES = {"limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1}
_smoke = {"on": False}


def parse_args(parser: argparse.ArgumentParser, smoke: dict[str, Any]) -> argparse.Namespace:
    """``parser``'s arguments plus ``--smoke``: the settings in ``smoke`` (by argument name) in place of the given
    ones, and a few batches an epoch in every `quiet_trainer`, so that the script runs end to end in seconds (the
    test suite runs every script so; its numbers mean nothing, its tables and JSON have their full shape)."""
    parser.add_argument("--smoke", action="store_true", help="a few steps of everything, in seconds (the tests' run)")
    args = parser.parse_args()
    _smoke["on"] = args.smoke
    if args.smoke:
        for name, value in smoke.items():
            setattr(args, name, value)
    return args


def smoke() -> bool:
    """Whether this run is a ``--smoke`` run."""
    return _smoke["on"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {torch.get_num_threads()} CPU threads{gpu}, torch {torch.__version__}"


def quiet_trainer(**kwargs) -> L.Trainer:
    """A Trainer that measures only training: no logger, checkpoints, progress bar, summary or sanity check."""
    defaults = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **(SMOKE_BATCHES if smoke() else {}),
    )
    return L.Trainer(**{**defaults, **kwargs})


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± standard deviation`` of ``values`` times ``scale`` (the spread is 0 for one value)."""
    spread = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * scale:.{digits}f} ± {spread:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(name: str, payload: dict) -> Path:
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
