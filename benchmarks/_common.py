"""Helpers shared by the benchmark scripts: machine description, Markdown tables, JSON results."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path

import lightning as L
import torch

RESULTS = Path(__file__).parent / "results"


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
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
