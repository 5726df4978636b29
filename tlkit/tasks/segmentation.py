"""`Segmentation`: a class for every pixel (semantic segmentation), from a decoder on the backbone's feature maps."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from tlkit.errors import config_error
from tlkit.functional.segmentation import dice_loss
from tlkit.metrics.iou import ClassIoU
from tlkit.tasks.base import Task
from tlkit.tasks.decoders import SemanticFPN
from tlkit.tasks.export_check import Tolerance, top_changed
from tlkit.tasks.heads import HeadOptions

#: What a mask pixel holds where no class is known (borders, unlabelled regions): the usual PNG-mask convention.
IGNORE_INDEX = 255


def palette(count: int = 256) -> list[int]:
    """The PASCAL VOC colour map (class k's colour from the bits of k): flat [r, g, b, ...] for a PIL "P" image, so
    an index mask opens in any viewer in colour while its pixels stay class indices."""
    colours = []
    for k in range(count):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours += [r, g, b]
    return colours


def index_mask_image(mask: np.ndarray) -> Image.Image:
    """An (H, W) array of class indices as a palette PNG image."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(palette())
    return image


def predicted_mask(output: torch.Tensor, size: tuple[int, int] | None) -> np.ndarray:
    """The class of each pixel of one image's (classes, H, W) probabilities, resized (nearest) to ``size`` (width,
    height) when given: the mask at the original image's size."""
    mask = output.argmax(dim=0).to(torch.uint8).numpy()
    if size is not None:
        mask = np.asarray(index_mask_image(mask).resize(size, Image.NEAREST))
    return mask


def class_shares(mask: np.ndarray, names: list[str]) -> dict[str, float]:
    """Each class present in ``mask`` and its share of the pixels."""
    counts = np.bincount(mask.reshape(-1), minlength=len(names))
    return {names[k]: round(float(c) / mask.size, 6) for k, c in enumerate(counts) if c}


def overlay(image: Image.Image, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``image`` with every pixel of a class other than 0 (background) tinted by the class's colour."""
    colours = np.asarray(palette(), dtype=np.float32).reshape(-1, 3)[mask]
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    tinted = np.where((mask > 0)[..., None], (1 - alpha) * pixels + alpha * colours, pixels)
    return Image.fromarray(tinted.round().astype(np.uint8))


class Segmentation(Task):
    """Semantic segmentation: a `SemanticFPN` decoder on the backbone's multi-scale feature maps gives every pixel a
    class; cross-entropy (pixels at ``ignore_index`` count for nothing) plus, with ``dice_weight``, the soft Dice
    loss. Metrics: mean IoU over the classes (``miou``, what checkpoints select on), pixel accuracy and, at validation
    and test, each class's IoU (``iou_<k>``, k the class index). ``predict`` writes each image's index mask (a
    palette PNG at the image's own size: pixel value = class index) and a colour overlay; the exported model returns
    per-pixel probabilities.

    Args:
        ignore_index: the mask value of unlabelled pixels.
        dice_weight: weight of the Dice loss added to cross-entropy (0: cross-entropy alone).
        decoder_channels: width of the decoder's pyramid.

    Examples:
        >>> model = FineTuning("resnet18", weights=None, num_classes=11, task=Segmentation(dice_weight=0.5))
    """

    name: ClassVar[str] = "segmentation"
    target_kind = "masks"
    monitor = ("val/miou", "max")
    calibrates: ClassVar[bool] = False
    min_outputs: ClassVar[int] = 2
    reads_feature_maps: ClassVar[bool] = True
    writes_files: ClassVar[bool] = True

    def __init__(self, ignore_index: int = IGNORE_INDEX, dice_weight: float = 0.0, decoder_channels: int = 64) -> None:
        super().__init__()
        if not 0 <= ignore_index <= 255:
            raise config_error("task.ignore_index", "a mask value in [0, 255]", ignore_index)
        if dice_weight < 0:
            raise config_error("task.dice_weight", ">= 0", dice_weight)
        if decoder_channels < 1:
            raise config_error("task.decoder_channels", "an integer >= 1", decoder_channels)
        self.ignore_index, self.dice_weight, self.decoder_channels = ignore_index, dice_weight, decoder_channels

    head_options = frozenset({"dropout"})

    def make_head(self, backbone: Any, num_outputs: int, options: HeadOptions) -> nn.Module:
        return SemanticFPN(backbone.feature_info, num_outputs, self.decoder_channels, options.dropout)

    def _at_target_size(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Logits at the masks' size (an input size the backbone's stride does not divide leaves them off by a few
        pixels)."""
        if outputs.shape[-2:] == targets.shape[-2:]:
            return outputs
        return F.interpolate(outputs, size=targets.shape[-2:], mode="bilinear", align_corners=False)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        outputs = self._at_target_size(outputs, targets)
        loss = F.cross_entropy(outputs, targets, ignore_index=self.ignore_index)
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_loss(outputs, targets, self.ignore_index)
        return loss

    def make_metrics(self) -> dict[str, Metric]:
        n, ignore = self.num_outputs, self.ignore_index
        return {
            "miou": MulticlassJaccardIndex(n, average="macro", ignore_index=ignore),
            "pixel_acc": MulticlassAccuracy(n, average="micro", ignore_index=ignore),
        }

    def make_detail_metrics(self) -> dict[str, Metric]:
        return {f"iou_{k}": ClassIoU(k, self.ignore_index) for k in range(self.num_outputs)}

    def metric_inputs(self, outputs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> tuple:
        return self._at_target_size(outputs, targets).argmax(dim=1), targets

    def postprocess(self, outputs: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """Per-pixel class probabilities, (N, classes, H, W)."""
        return outputs.softmax(dim=1)

    def export_criterion(self, tolerance: Tolerance) -> str:
        return f"{tolerance.describe()}, and the same class at every pixel"

    def export_disagreement(self, exported: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> str | None:
        changed = top_changed(exported, expected, tolerance)
        return f"the mask differs at {int(changed.sum())} of {changed.size} pixels" if changed.any() else None

    def export_shape(self, input_size: int) -> list[Any]:
        return ["batch", self.num_outputs, input_size, input_size]  # a probability per class and pixel

    # --------------------------------------------------------------------------------------------------- predict
    def write_prediction(
        self,
        output: torch.Tensor,
        image: Image.Image | None,
        folder: Path,
        stem: str,
        names: list[str],
        class_ids: list[int] | None = None,
    ) -> dict[str, Any]:
        """Write one image's mask (at ``image``'s size when the image is given, with its overlay) under ``folder``;
        return its record: the files and each predicted class's share of the pixels."""
        mask = predicted_mask(output, image.size if image is not None else None)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"mask": str(folder / "masks" / f"{stem}.png")}
        index_mask_image(mask).save(record["mask"])
        if image is not None:
            (folder / "overlays").mkdir(parents=True, exist_ok=True)
            record["overlay"] = str(folder / "overlays" / f"{stem}.png")
            overlay(image, mask).save(record["overlay"])
        record["classes"] = class_shares(mask, names)
        return record

    def response_record(
        self,
        output: torch.Tensor,
        image_size: tuple[int, int] | None,
        names: list[str],
        class_ids: list[int] | None,
        top_k: int,
    ) -> dict[str, Any]:
        """The mask (at the image's size) as a base64 palette PNG, the same file ``predict`` writes under
        ``masks/``, and each predicted class's share of the pixels."""
        mask = predicted_mask(output, image_size)
        png = io.BytesIO()
        index_mask_image(mask).save(png, format="PNG")
        return {"mask_png": base64.b64encode(png.getvalue()).decode("ascii"), "classes": class_shares(mask, names)}

    def csv_columns(self, names: list[str], top_k: int) -> list[str]:
        return ["file", "mask", "overlay", "classes"]

    def csv_row(self, record: dict[str, Any], names: list[str]) -> list[str]:
        shares = " ".join(f"{name}:{share:.4f}" for name, share in record["classes"].items())
        return [record["file"], record["mask"], record.get("overlay", ""), shares]

    def arguments(self) -> dict[str, Any]:
        return {
            "ignore_index": self.ignore_index,
            "dice_weight": self.dice_weight,
            "decoder_channels": self.decoder_channels,
        }
