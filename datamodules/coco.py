"""Detection and segmentation data in COCO's format: images plus an instances JSON (what annotation tools export).

`CocoDataModule` reads ``root/instances.json`` (``images``: ``id``, ``file_name`` relative to ``root``,
``width``, ``height``; ``annotations``: ``image_id``, ``category_id``, ``bbox`` as ``[x, y, width, height]``;
``categories``: ``id``, ``name``; with ``targets: masks``, each annotation's ``segmentation`` as polygons or RLE), or
the same under ``root/train``, ``root/val`` and ``root/test`` for splits of
one's own. Everything is checked before training, one line naming the first problem: a box outside its image or of
zero area, an annotation naming an image or a category the file does not have, an image file that is missing.
Images without annotations are kept as background, and the data summary counts them. Crowd annotations
(``iscrowd: 1``) are left out of the boxes, as COCO's evaluation leaves them out of what a detector must find, and
are unlabelled (255) in masks. A mask is every annotation of the image drawn in turn, its category's index plus one
(0 is the background).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from tlkit.datamodules.datasets import Split
from tlkit.datamodules.dense import DenseDataModule, PairDataset
from tlkit.datamodules.folders import check_folder
from tlkit.datamodules.segmentation import SegmentationDataset
from tlkit.errors import ConfigError, config_error
from tlkit.protocols import TargetKind
from tlkit.tasks.segmentation import IGNORE_INDEX

INSTANCES = "instances.json"


#: How far past its image's edge (in pixels) a box may end and be clipped to it: annotation tools round coordinates
#: to floats that can overshoot by a fraction of a pixel. A box further out is refused.
EDGE_TOLERANCE = 1.0


@dataclass(frozen=True)
class CocoFile:
    """What a COCO instances file holds, as tlkit trains on it.

    Attributes:
        classes: category names, in id order (the head's order).
        category_ids: the file's own category ids, in the same order: what predictions are written with.
        split: the images and each one's target ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [k, ...],
            "image_id": the file's id, ...}``, k the category's index in ``classes``.
        background: how many images have no box.
        clipped: how many boxes ended within `EDGE_TOLERANCE` past their image and were clipped to it.
    """

    classes: list[str]
    category_ids: list[int]
    split: Split
    background: int
    clipped: int


def checked_box(x: float, y: float, w: float, h: float, width: int, height: int, where: str) -> list[float]:
    """A COCO box [x, y, w, h] as [x1, y1, x2, y2] inside its ``width`` x ``height`` image: clipped to the edge where
    it ends within `EDGE_TOLERANCE` past it (rounding in annotation tools' exports); a box without area or further
    outside is one line naming ``where``."""
    reach = EDGE_TOLERANCE
    box = [max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))]
    past_edge = x < -reach or y < -reach or x + w > width + reach or y + h > height + reach
    if w <= 0 or h <= 0 or past_edge or box[2] <= box[0] or box[3] <= box[1]:
        raise ConfigError(
            f"Expected the box of {where} to have a positive area inside its image ({width}x{height}), but it "
            f"is [x, y, w, h] = {[x, y, w, h]}."
        )
    return box


def read_coco(path: Path) -> CocoFile:
    """A COCO instances file, every annotation checked (`CocoFile`)."""
    try:
        coco = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"Expected {str(path)!r} to be a COCO instances JSON file, but it is not ({err}).") from None
    missing = [key for key in ("images", "annotations", "categories") if key not in coco]
    if missing:
        raise ConfigError(f"Expected {str(path)!r} to have COCO's {', '.join(missing)}, but it has none.")
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    index_of = {c["id"]: k for k, c in enumerate(categories)}
    images = {image["id"]: image for image in coco["images"]}
    boxes: dict[int, list[list[float]]] = {i: [] for i in images}
    labels: dict[int, list[int]] = {i: [] for i in images}
    segments: dict[int, list[tuple[int, Any]]] = {i: [] for i in images}  # (mask value, segmentation)
    clipped = 0
    for annotation in coco["annotations"]:
        where = f"annotation {annotation.get('id', '?')} in {str(path)!r}"
        if annotation.get("image_id") not in images:
            raise ConfigError(
                f"Expected {where} to name an image of the file, but image_id {annotation.get('image_id')!r} is none."
            )
        if annotation.get("category_id") not in index_of:
            known = ", ".join(str(c) for c in index_of)
            raise ConfigError(
                f"Expected {where} to name a category of the file ({known}), but category_id "
                f"{annotation.get('category_id')!r} is none."
            )
        if annotation.get("segmentation"):
            value = IGNORE_INDEX if annotation.get("iscrowd") else index_of[annotation["category_id"]] + 1
            segments[annotation["image_id"]].append((value, annotation["segmentation"]))
        if annotation.get("iscrowd"):
            continue
        image = images[annotation["image_id"]]
        x, y, w, h = (float(v) for v in annotation["bbox"])
        box = checked_box(x, y, w, h, image["width"], image["height"], where)
        clipped += box != [x, y, x + w, y + h]
        boxes[image["id"]].append(box)
        labels[image["id"]].append(index_of[annotation["category_id"]])
    samples, targets = [], []
    for image_id, image in images.items():
        file = path.parent / image["file_name"]
        if not file.is_file():
            raise ConfigError(
                f"Expected the image {image['file_name']!r} that {str(path)!r} names, but {str(file)!r} is missing."
            )
        samples.append(str(file))
        shape = {"height": int(image["height"]), "width": int(image["width"]), "image_id": image_id}
        targets.append({"boxes": boxes[image_id], "labels": labels[image_id], "segments": segments[image_id], **shape})
    background = sum(1 for t in targets if not t["labels"])
    names, ids = [str(c["name"]) for c in categories], [c["id"] for c in categories]
    return CocoFile(names, ids, Split(samples, targets), background, clipped)


class DetectionDataset(PairDataset):
    """(image, {"boxes": (K, 4) float32 x1, y1, x2, y2, "labels": (K,) int64}) pairs."""

    def target(self, index: int, image: Any) -> dict[str, torch.Tensor]:
        target = self.split.labels[index]
        boxes = torch.tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        return {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
            "labels": torch.tensor(target["labels"], dtype=torch.int64),
        }

    def plain(self, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.as_subclass(torch.Tensor) for k, v in target.items()}


def collate_detections(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Images stacked, targets as a list (each image has its own number of boxes)."""
    return torch.stack([image for image, _ in batch]), [target for _, target in batch]


class BoxesOrMasks:
    """For a dense datamodule with a ``targets`` argument, ``boxes`` or ``masks``: what it serves, how it batches and
    which dataset reads it follow that argument."""

    @property
    def target_kind(self) -> TargetKind:
        return self.hparams.targets

    @property
    def collate(self) -> Any:
        return collate_detections if self.hparams.targets == "boxes" else torch.utils.data.default_collate

    def pair_dataset(self, split: Split, transform: Any) -> Dataset:
        dataset = DetectionDataset if self.hparams.targets == "boxes" else SegmentationDataset
        return dataset(split, transform, self.load_image)


class CocoDataModule(BoxesOrMasks, DenseDataModule):
    """Images with boxes or masks in COCO's format (the layout above).

    Args:
        root: the folder holding ``instances.json`` and the images it names (or ``train/``, ``val/``, ``test/``,
            each holding its own).
        targets: ``boxes`` (detection: the categories are the classes) or ``masks`` (segmentation from the
            annotations' polygons or RLE: background, then the categories).

    The other arguments are `DenseDataModule`'s and `ImageDataModule`'s.

    Examples:
        >>> dm = CocoDataModule(root="data/parts", targets="boxes", image_size=320)
    """

    classes_hint = "a detector needs one category or more"

    def __init__(self, *, root: str, targets: Literal["boxes", "masks"] = "boxes", **kwargs) -> None:
        if targets not in ("boxes", "masks"):
            raise config_error("targets", "'boxes' (detection) or 'masks' (segmentation)", targets)
        super().__init__(**kwargs)
        self._category_ids: list[int] = []

    def describe_source(self) -> str:
        return repr(self.hparams.root)

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        classes, self._category_ids, splits = read_coco_splits(Path(self.hparams.root).expanduser())
        return (classes, splits) if self.hparams.targets == "boxes" else (["background", *classes], splits)

    def class_ids(self) -> list[int] | None:
        """The file's category ids in class order (detection), what predictions are written with; None for masks
        (whose values are the classes' indices, 0 the background)."""
        self.class_names()  # reads the file once
        return list(self._category_ids) if self.hparams.targets == "boxes" else None

    def predict_sample_ids(self) -> list[int] | None:
        """The file's image ids of the samples predicted (its test split's); None for a ``predict_dir``'s images."""
        if self.hparams.predict_dir is not None:
            return None
        return [int(target["image_id"]) for target in self._predict_split().labels]

    def check_split(self, split: Split, classes: list[str]) -> None:
        """Boxes were checked as they were read (`read_coco`); masks need a segmentation on every annotation and
        the image's size as the file states it."""
        if self.hparams.targets == "boxes":
            return
        for path, target in zip(split.samples, split.labels):
            if len(target["segments"]) < len(target["labels"]):
                raise ConfigError(
                    f"Expected every annotation of image {path!r} to have a `segmentation` for `targets: masks`, "
                    "but one has none; use `targets: boxes` for box-only annotations."
                )
            with Image.open(path) as image:
                if image.size != (target["width"], target["height"]):
                    raise ConfigError(
                        f"Expected image {path!r} to be {target['width']}x{target['height']}, as its instances file "
                        f"says, but it is {image.width}x{image.height}."
                    )


def read_coco_splits(root: Path) -> tuple[list[str], list[int], dict[str, Split]]:
    """(category names, the file's category ids, the splits) of ``root/instances.json``, or of
    ``root/<split>/instances.json`` for each of train, val and test present."""
    check_folder(root, "`root`")
    if (root / INSTANCES).is_file():
        folders = {"train": root}
    else:
        folders = {name: root / name for name in ("train", "val", "test") if (root / name / INSTANCES).is_file()}
        if "train" not in folders:
            raise ConfigError(f"Expected {str(root)!r} to hold {INSTANCES}, or train/{INSTANCES} (with val/, test/).")
    first: CocoFile | None = None
    files = {}
    for name, folder in folders.items():
        read = read_coco(folder / INSTANCES)
        if first is not None and (read.classes, read.category_ids) != (first.classes, first.category_ids):
            raise ConfigError(
                f"Expected {str(folder / INSTANCES)!r} to have the training split's categories "
                f"({_categories(first)}), but it has {_categories(read)}."
            )
        first, files[name] = first or read, read
    counts = ", ".join(f"{name} {len(f.split.samples)} ({f.background} without boxes)" for name, f in files.items())
    carved = [name for name in ("val", "test") if name not in files]
    held_out = f"; {' and '.join(carved)} held out of train" if carved else ""
    rank_zero_info(
        f"COCO data in {str(root)!r}: {counts} images{held_out}; images without boxes are kept as background."
    )
    clipped = sum(f.clipped for f in files.values())
    if clipped:
        rank_zero_info(
            f"COCO data in {str(root)!r}: clipped {clipped} box(es) ending within {EDGE_TOLERANCE:g} pixel past their "
            "image's edge (rounding in the annotation export) to the edge."
        )
    assert first is not None
    return first.classes, first.category_ids, {name: f.split for name, f in files.items()}


def _categories(coco: CocoFile) -> str:
    return ", ".join(f"{name} (id {i})" for name, i in zip(coco.classes, coco.category_ids))
