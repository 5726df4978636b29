"""`Detection`: boxes around objects and their classes, from an FCOS head on the backbone's feature maps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision

from tlkit.errors import config_error
from tlkit.tasks.base import Task
from tlkit.tasks.detectors import DetectorOutputs, FCOSDetector
from tlkit.tasks.export_check import PROBABILITIES, ExportCheck, Tolerance, box_iou, differences, outside, top_changed
from tlkit.tasks.heads import HeadOptions
from tlkit.tasks.segmentation import palette

#: The least score of a detection drawn on predict's images and listed in its CSV file: a person reads those, and the
#: evaluation threshold (0.05) would show up to 100 boxes an image. Ultralytics' predict shows 0.25 and up,
#: Detectron2's demo 0.5; FCOS's scores (a focal-loss sigmoid times centerness) run lower than a softmax's.
DISPLAY_THRESHOLD = 0.3


#: An exported box's coordinates (input pixels) may differ from the checkpoint's by this (rtol, atol): a box of 100
#: pixels by a tenth of one.
BOX_PIXELS = (1e-3, 1e-2)
#: The least IoU at which an exported location's box is the checkpoint's.
MATCHING_IOU = 0.99


class BoxMAP(MeanAveragePrecision):
    """One value of torchmetrics' COCO mean average precision (``map``: over IoU 0.5 to 0.95; ``map_50``: at 0.5),
    as a scalar metric Lightning logs."""

    def __init__(self, key: str) -> None:
        super().__init__(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        self.key = key

    def compute(self) -> torch.Tensor:
        return super().compute()[self.key]


def image_boxes(output: dict[str, torch.Tensor], size: tuple[int, int] | None) -> torch.Tensor:
    """One image's boxes (x1, y1, x2, y2) from the model input's pixels to the image's (``size``: width, height)."""
    boxes = output["boxes"].float()
    if size is not None:
        height, width = output["input_size"].tolist()
        boxes = boxes * torch.tensor([size[0] / width, size[1] / height] * 2)
    return boxes


def image_detections(
    output: dict[str, torch.Tensor], boxes: torch.Tensor, names: list[str], class_ids: list[int] | None
) -> list[dict[str, Any]]:
    """One image's detections as ``predict`` writes them: class, ``category_id``, score and COCO's box."""
    return [
        {
            "class": names[int(label)],
            "category_id": category_id(int(label), class_ids),
            "score": round(float(score), 6),
            "box": [
                round(float(box[0]), 2),
                round(float(box[1]), 2),
                round(float(box[2] - box[0]), 2),
                round(float(box[3] - box[1]), 2),
            ],
        }
        for box, score, label in zip(boxes, output["scores"], output["labels"])
    ]


class Detection(Task):
    """Object detection: an `FCOSDetector` (torchvision's FCOS head on a feature pyramid over the backbone's maps at
    strides 8 to 32) boxes every object and classes it. Trained from the backbone's ImageNet weights (the head starts
    from scratch: tlkit ships no detection weights). Loss: FCOS's sigmoid focal loss, GIoU box loss and centerness.
    Metrics: COCO mean average precision over IoU thresholds 0.5 to 0.95 (``map``, what checkpoints select on) and at
    0.5 (``map_50``), by torchmetrics with the COCO evaluator. ``predict`` writes every image's detections (boxes in
    the image's own pixels, ``[x, y, width, height]`` as COCO has them, with the category ids of the user's COCO
    file) to the JSONL file and to ``detections.json`` in COCO's results format (every detection above
    ``score_threshold``: what mAP is computed from), and, for a person to look at, the CSV file and a copy of each
    image with its boxes drawn (only detections scoring ``display_threshold`` or more). The exported model returns
    every location's box and class scores; thresholds and non-maximum suppression follow it (the export page's
    snippet).

    Args:
        score_threshold: the least score a detection is kept with (evaluation, the JSONL and COCO results: low, so
            that mAP sees the whole precision-recall curve).
        display_threshold: the least score a detection is drawn and written to the CSV file with.
        nms_threshold: the IoU above which non-maximum suppression drops the lower-scored of two boxes of a class.
        detections_per_image: the most detections kept per image.
        channels: width of the pyramid and of the head.

    Examples:
        >>> model = FineTuning("resnet18", weights=None, num_classes=10, task=Detection())
    """

    name: ClassVar[str] = "detection"
    target_kind = "boxes"
    monitor = ("val/map", "max")
    #: The exported model's output: every location's box and class scores (non-maximum suppression is the caller's).
    output_name: ClassVar[str] = "locations"
    calibrates: ClassVar[bool] = False
    reads_feature_maps: ClassVar[bool] = True
    writes_files: ClassVar[bool] = True
    exports_predictions: ClassVar[bool] = False

    def __init__(
        self,
        score_threshold: float = 0.05,
        display_threshold: float = DISPLAY_THRESHOLD,
        nms_threshold: float = 0.6,
        detections_per_image: int = 100,
        channels: int = 64,
    ) -> None:
        super().__init__()
        if not 0.0 <= score_threshold < 1.0:
            raise config_error("task.score_threshold", "in [0, 1)", score_threshold)
        if not score_threshold <= display_threshold <= 1.0:
            raise config_error(
                "task.display_threshold", f"in [score_threshold ({score_threshold:g}), 1]", display_threshold
            )
        if not 0.0 < nms_threshold <= 1.0:
            raise config_error("task.nms_threshold", "in (0, 1]", nms_threshold)
        if detections_per_image < 1:
            raise config_error("task.detections_per_image", "an integer >= 1", detections_per_image)
        if channels < 32 or channels % 32:
            raise config_error("task.channels", "a multiple of 32 (the head's group norm has 32 groups)", channels)
        self.score_threshold, self.display_threshold, self.nms_threshold = (
            score_threshold,
            display_threshold,
            nms_threshold,
        )
        self.detections_per_image, self.channels = detections_per_image, channels

    head_options = frozenset()

    def make_head(self, backbone: Any, num_outputs: int, options: HeadOptions) -> nn.Module:
        return FCOSDetector(
            backbone.feature_info,
            num_outputs,
            self.channels,
            score_threshold=self.score_threshold,
            nms_threshold=self.nms_threshold,
            detections_per_image=self.detections_per_image,
        )

    def loss(self, outputs: DetectorOutputs, targets: list[dict], label_smoothing: float = 0.0) -> torch.Tensor:
        return sum(outputs.detector.losses(outputs, targets).values())

    def make_metrics(self) -> dict[str, Metric]:
        return {"map": BoxMAP("map"), "map_50": BoxMAP("map_50")}

    def make_train_metrics(self) -> dict[str, Metric]:
        return {}  # each training step would otherwise decode and match every image's boxes

    def metric_inputs(self, outputs: DetectorOutputs, targets: list[dict], temperature: torch.Tensor) -> tuple:
        with torch.no_grad():
            detections = outputs.detector.detections(outputs)
        return [{k: v.detach().float() if k != "labels" else v for k, v in d.items()} for d in detections], targets

    def postprocess(self, outputs: DetectorOutputs, temperature: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (x1, y1, x2, y2 in the model input's pixels), ``scores``, ``labels`` and
        ``input_size`` (height, width: what the boxes' pixels are of)."""
        size = torch.tensor(outputs.image_size)
        return [{**d, "input_size": size} for d in outputs.detector.detections(outputs)]

    def export_outputs(self, outputs: DetectorOutputs, temperature: torch.Tensor) -> torch.Tensor:
        """Every location's decoded box and class scores, (N, locations, 4 + classes) (`FCOSDetector.locations`):
        a fixed shape an ONNX graph holds; the score threshold, non-maximum suppression and the detection limit
        (``model.json``'s ``task``) are the caller's, as the export page's snippet does them."""
        return outputs.detector.locations(outputs)

    def check_export(self, exported: np.ndarray, expected: np.ndarray, scale: float = 1.0) -> ExportCheck:
        """Box coordinates within `BOX_PIXELS` and class scores within probabilities' tolerance; and every location
        that scores above ``score_threshold`` keeps its box (IoU > `MATCHING_IOU`) and its class."""
        boxes, scores = Tolerance(*BOX_PIXELS).scaled(scale), PROBABILITIES.scaled(scale)
        clear = PROBABILITIES  # what counts as a clear answer does not loosen with ``scale`` (`Task.check_export`)
        criterion = (
            f"box coordinates {boxes.describe()}, class scores {scores.describe()}, and every box scoring over "
            f"{self.score_threshold:g} at IoU > {MATCHING_IOU:g} with the same class"
        )
        problem = outside(exported[..., :4], expected[..., :4], boxes, "box coordinates")
        problem = problem or outside(exported[..., 4:], expected[..., 4:], scores, "class scores")
        if problem is None:
            expected_scores, exported_scores = expected[..., 4:].reshape(-1, self.num_outputs), exported[..., 4:]
            detected = expected_scores.max(axis=1) > self.score_threshold + clear.bound(self.score_threshold)
            moved = box_iou(expected[..., :4].reshape(-1, 4)[detected], exported[..., :4].reshape(-1, 4)[detected])
            relabelled = top_changed(
                exported_scores.reshape(-1, self.num_outputs)[detected], expected_scores[detected], clear
            )
            changed = int(((moved <= MATCHING_IOU) | relabelled).sum())
            if changed:
                problem = f"{changed} of {int(detected.sum())} boxes scoring over the threshold moved or changed class"
        return ExportCheck(*differences(exported, expected), criterion, problem)

    def export_shape(self, input_size: int) -> list[Any]:
        return ["batch", "locations", 4 + self.num_outputs]  # each location's box, then its class scores

    # --------------------------------------------------------------------------------------------------- predict
    def write_prediction(
        self,
        output: dict[str, torch.Tensor],
        image: Image.Image | None,
        folder: Path,
        stem: str,
        names: list[str],
        class_ids: list[int] | None = None,
    ) -> dict[str, Any]:
        """The image's detections in its own pixels (COCO's ``[x, y, width, height]``), each with its class's
        ``category_id`` (``class_ids``, the user's file's; else the class's index from 1), and the image with those
        scoring ``display_threshold`` or more drawn under ``folder/drawn`` (when the image is a file)."""
        boxes = image_boxes(output, image.size if image is not None else None)
        detections = image_detections(output, boxes, names, class_ids)
        record: dict[str, Any] = {"detections": detections}
        if image is not None:
            drawn = image.copy()
            draw = ImageDraw.Draw(drawn)
            colours = palette()
            for box, detection, label in zip(boxes.tolist(), detections, output["labels"].tolist()):
                if detection["score"] < self.display_threshold:
                    continue
                colour = tuple(colours[3 * (label + 1) : 3 * (label + 1) + 3])
                draw.rectangle(box, outline=colour, width=max(1, round(min(image.size) / 100)))
                draw.text((box[0] + 1, box[1] + 1), f"{detection['class']} {detection['score']:.2f}", fill=colour)
            (folder / "drawn").mkdir(parents=True, exist_ok=True)
            record["drawn"] = str(folder / "drawn" / f"{stem}.png")
            drawn.save(record["drawn"])
        return record

    def response_record(
        self,
        output: dict[str, torch.Tensor],
        image_size: tuple[int, int] | None,
        names: list[str],
        class_ids: list[int] | None,
        top_k: int,
    ) -> dict[str, Any]:
        """The image's detections in its own pixels, as `write_prediction` records them."""
        return {"detections": image_detections(output, image_boxes(output, image_size), names, class_ids)}

    def write_results(self, rows: list[dict[str, Any]], folder: Path, names: list[str]) -> Path:
        """Every image's detections in COCO's results format, to evaluate against the user's file with pycocotools:
        ``image_id`` the file's id of the image (the row's ``image_id``; for images of a predict folder, which have
        none, the row's number from 1 in the written order), with ``file_name`` beside it; ``category_id`` the
        file's id of the class (`write_prediction`)."""
        results = [
            {
                "image_id": row.get("image_id", number),
                "file_name": row["file"],
                "category_id": detection["category_id"],
                "bbox": detection["box"],
                "score": detection["score"],
            }
            for number, row in enumerate(rows, start=1)
            for detection in row["detections"]
        ]
        path = folder / "detections.json"
        path.write_text(json.dumps(results))
        return path

    def csv_columns(self, names: list[str], top_k: int) -> list[str]:
        """``detections (score >= 0.3)``: the header says which detections a row lists (the JSONL file has all)."""
        return ["file", f"detections (score >= {self.display_threshold:g})", "drawn"]

    def csv_row(self, record: dict[str, Any], names: list[str]) -> list[str]:
        boxes = " ".join(
            f"{d['class']}:{d['score']:.3f}@{','.join(f'{v:g}' for v in d['box'])}"
            for d in record["detections"]
            if d["score"] >= self.display_threshold
        )
        return [record["file"], boxes, record.get("drawn", "")]

    def arguments(self) -> dict[str, Any]:
        return {
            "score_threshold": self.score_threshold,
            "display_threshold": self.display_threshold,
            "nms_threshold": self.nms_threshold,
            "detections_per_image": self.detections_per_image,
            "channels": self.channels,
        }


def category_id(label: int, class_ids: list[int] | None) -> int:
    """The id a class is written with: the user's file's (``class_ids``, in label order), else its index from 1."""
    return class_ids[label] if class_ids else label + 1
