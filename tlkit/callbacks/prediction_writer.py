"""`PredictionWriter`: write ``predict`` results as CSV and JSONL files a user can open: file, class, probability."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from tlkit.protocols import NamedClassifier, NamedPredictSamples


def unused_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem.suffix``, or ``stem-1``, ``stem-2``, ... if taken: earlier results are never overwritten."""
    path, n = folder / f"{stem}{suffix}", 0
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


class PredictionWriter(BasePredictionWriter):
    """Collects class probabilities from ``predict`` and writes one row per sample.

    Columns: ``file`` (the image path, or ``test/<index>`` for in-memory data), ``prediction`` (class name),
    ``probability``, and ``top_k`` (the ``top_k`` best ``class:probability`` pairs). JSONL has the same fields, with
    ``top_k`` as a list of ``{"class", "probability"}``. Class names come from the model (stored in its checkpoint).

    Args:
        output_dir: folder for the files (created if needed).
        name: file stem; an existing file is never overwritten (``-1``, ``-2``, ... are appended).
        formats: which files to write.
        top_k: how many classes to list per sample.

    Examples:
        >>> trainer.predict(model, datamodule=dm, callbacks=[PredictionWriter("predictions")])
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        name: str = "predictions",
        formats: list[Literal["csv", "jsonl"]] | None = None,
        top_k: int = 3,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.name, self.top_k = Path(output_dir), name, top_k
        self.formats = list(formats or ["csv", "jsonl"])
        self.rows: list[dict[str, Any]] = []
        self.written: list[Path] = []

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows = []
        datamodule = trainer.datamodule
        self._names = datamodule.predict_sample_names() if isinstance(datamodule, NamedPredictSamples) else None
        named = isinstance(pl_module, NamedClassifier)
        self._classes = (pl_module.class_names if named else None) or []

    @override
    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: torch.Tensor,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        probabilities = prediction.detach().float().cpu()
        k = min(self.top_k, probabilities.shape[-1])
        values, indices = probabilities.topk(k, dim=-1)
        offset = len(self.rows)
        for row, (top_values, top_indices) in enumerate(zip(values.tolist(), indices.tolist())):
            index = batch_indices[row] if batch_indices is not None else offset + row
            top = [{"class": self._class_name(c), "probability": round(p, 6)} for p, c in zip(top_values, top_indices)]
            self.rows.append(
                {
                    "index": int(index),
                    "file": self._names[index] if self._names else str(index),
                    "prediction": top[0]["class"],
                    "probability": top[0]["probability"],
                    "top_k": top,
                }
            )

    def _class_name(self, index: int) -> str:
        return self._classes[index] if index < len(self._classes) else str(index)

    @override
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            # Each rank predicted its own shard (Lightning's unrepeated sampler): collect every row on rank 0.
            gathered: list[list[dict[str, Any]]] = [[] for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, self.rows)
            self.rows = sorted((row for rows in gathered for row in rows), key=lambda row: row["index"])
        if not trainer.is_global_zero:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.written = []
        if "csv" in self.formats:
            path = unused_path(self.output_dir, self.name, ".csv")
            with path.open("w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(["file", "prediction", "probability", "top_k"])
                for row in self.rows:
                    top = " ".join(f"{t['class']}:{t['probability']:.4f}" for t in row["top_k"])
                    writer.writerow([row["file"], row["prediction"], f"{row['probability']:.6f}", top])
            self.written.append(path)
        if "jsonl" in self.formats:
            path = unused_path(self.output_dir, self.name, ".jsonl")
            with path.open("w") as file:
                for row in self.rows:
                    file.write(json.dumps({k: v for k, v in row.items() if k != "index"}) + "\n")
            self.written.append(path)
        rank_zero_info(f"tlkit: wrote {len(self.rows)} predictions to {', '.join(map(str, self.written))}")
