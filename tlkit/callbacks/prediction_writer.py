"""`PredictionWriter`: write ``predict`` results as CSV and JSONL files a user can open: a file and what the model's
task predicts for it (a class and its probability; every label's probability and the labels chosen; numbers)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from typing_extensions import override

from tlkit.protocols import HasTask, IdentifiedPredictSamples, NamedClassifier, NamedPredictSamples
from tlkit.tasks import Classification


def unused_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem.suffix``, or ``stem-1``, ``stem-2``, ... if taken: earlier results are never overwritten."""
    path, n = folder / f"{stem}{suffix}", 0
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


def output_names(classes: list[str], count: int) -> list[str]:
    """The names of ``count`` outputs: the model's class names, and an output's index where it has none."""
    return [classes[i] if i < len(classes) else str(i) for i in range(count)]


def _original_image(file: str) -> Image.Image | None:
    """The image a prediction was made for, as a file holds it (None for in-memory data)."""
    path = Path(file)
    if not path.is_file():
        return None
    with Image.open(path) as image:
        return image.convert("RGB")


class PredictionWriter(BasePredictionWriter):
    """Collects what ``predict`` returns and writes one row per sample, in the form of the model's task.

    Every row starts with ``file`` (the image path, or ``test/<index>`` for in-memory data). Classification:
    ``prediction`` (class name), ``probability``, and ``top_k`` (the ``top_k`` best ``class:probability`` pairs;
    in JSONL a list of ``{"class", "probability"}``). Multi-label: ``labels`` (those at or above their thresholds,
    ``;``-joined in CSV) and each label's probability (a column per label; in JSONL ``probabilities``, by name).
    Regression: a column per target, in the targets' units (in JSONL ``values``, by name). Segmentation: each
    image's index mask (``masks/``, a palette PNG at the image's size) and colour overlay (``overlays/``), and the
    share of the pixels of each predicted class. Detection: each image's boxes, classes and scores, the image with
    the boxes drawn (``drawn/``), and ``detections.json`` in COCO's results format. Names come from the model (stored
    in its checkpoint).

    Args:
        output_dir: folder for the files (created if needed).
        name: file stem; an existing file is never overwritten (``-1``, ``-2``, ... are appended).
        formats: which files to write.
        top_k: how many classes to list per sample.
        explain: also explain each image's predicted class (a multi-label model's most probable label) with a map of
            its pixels (`tlkit.functional.attribution`: ``gradcam`` or ``occlusion``): the image as the model saw it
            with the map over it (``explanations/<n>_<name>.png``) and the map alone (``..._map.png``, 8-bit
            greyscale, 255 the strongest evidence), named in each row's ``explanation``.

    Examples:
        >>> trainer.predict(model, datamodule=dm, callbacks=[PredictionWriter("predictions")])
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        name: str = "predictions",
        formats: list[Literal["csv", "jsonl"]] | None = None,
        top_k: int = 3,
        explain: Literal["gradcam", "occlusion"] | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.name, self.top_k, self.explain = Path(output_dir), name, top_k, explain
        self.formats = list(formats or ["csv", "jsonl"])
        self.rows: list[dict[str, Any]] = []
        self.written: list[Path] = []

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows, self._width = [], 0
        datamodule = trainer.datamodule
        self._names = datamodule.predict_sample_names() if isinstance(datamodule, NamedPredictSamples) else None
        #: The user's file's ids of the predicted samples (a COCO file's image ids), written beside their names.
        self._ids = datamodule.predict_sample_ids() if isinstance(datamodule, IdentifiedPredictSamples) else None
        named = isinstance(pl_module, NamedClassifier)
        self._classes = (pl_module.class_names if named else None) or []
        self._class_ids = pl_module.class_ids if named else None
        self._task = pl_module.task if isinstance(pl_module, HasTask) else Classification()

    @override
    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: torch.Tensor | list[dict[str, torch.Tensor]],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        dense = self._task.writes_files
        if isinstance(prediction, torch.Tensor):
            outputs = prediction.detach().float().cpu()
            self._width = outputs.shape[1] if dense else outputs.shape[-1]
        else:  # one dict of tensors per sample (detections)
            outputs = [{k: v.detach().cpu() for k, v in sample.items()} for sample in prediction]
            self._width = self._task.num_outputs
        names = self._output_names(self._width)
        offset = len(self.rows)
        for row, values in enumerate(outputs if dense else outputs.tolist()):
            index = batch_indices[row] if batch_indices is not None else offset + row
            file = self._names[index] if self._names else str(index)
            if dense:  # masks or drawn boxes, a file per sample (each rank writes its own samples')
                stem = f"{index:06d}_{Path(file).stem}"
                image = _original_image(file)
                record = self._task.write_prediction(values, image, self.output_dir, stem, names, self._class_ids)
            else:
                record = self._task.prediction_record(values, names, self.top_k)
            identified = {"image_id": self._ids[index]} if self._ids else {}
            self.rows.append({"index": int(index), "file": file, **identified, **record})
        if self.explain is not None:
            self._explain(pl_module, batch, outputs, [row["index"] for row in self.rows[offset:]], names)

    def _explain(
        self, pl_module: pl.LightningModule, batch: Any, outputs: torch.Tensor, indices: list[int], names: list[str]
    ) -> None:
        """Each image's map for its most probable class, written under ``explanations/`` and named in its row."""
        from tlkit.functional import attribution

        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        targets = outputs.argmax(dim=1)
        maps = attribution.activation_maps(pl_module, images, targets.to(images.device), self.explain)
        config = pl_module.trained_data_config or pl_module.backbone.data_config
        folder = self.output_dir / "explanations"
        folder.mkdir(parents=True, exist_ok=True)
        for row, image, activation_map, target in zip(self.rows[-len(indices) :], images, maps, targets.tolist()):
            stem = f"{row['index']:06d}_{Path(row['file']).stem}"
            shown = attribution.shown_image(image, config.mean, config.std)
            overlay, alone = folder / f"{stem}.png", folder / f"{stem}_map.png"
            attribution.overlay_map(shown, activation_map).save(overlay)
            attribution.map_image(activation_map).save(alone)
            why = {"method": self.explain, "class": names[target], "overlay": str(overlay), "map": str(alone)}
            row["explanation"] = why

    def _output_names(self, count: int) -> list[str]:
        return output_names(self._classes, count)

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
            names = self._output_names(self._width)
            with path.open("w", newline="") as file:
                writer = csv.writer(file)
                explained = ["explained", "explanation"] if self.explain is not None else []
                writer.writerow([*self._task.csv_columns(names, self.top_k), *explained])
                for row in self.rows:
                    why = [row["explanation"]["class"], row["explanation"]["overlay"]] if explained else []
                    writer.writerow([*self._task.csv_row(row, names), *why])
            self.written.append(path)
        if self._task.writes_files:
            results = self._task.write_results(self.rows, self.output_dir, self._output_names(self._width))
            if results is not None:
                self.written.append(results)
        if "jsonl" in self.formats:
            path = unused_path(self.output_dir, self.name, ".jsonl")
            with path.open("w") as file:
                for row in self.rows:
                    file.write(json.dumps({k: v for k, v in row.items() if k != "index"}) + "\n")
            self.written.append(path)
        rank_zero_info(f"tlkit: wrote {len(self.rows)} predictions to {', '.join(map(str, self.written))}")
