"""Object detection data in COCO's format: images plus an instances JSON (what annotation tools export).

`CocoDetectionDataModule` reads ``root/instances.json`` (``images``: ``id``, ``file_name`` relative to ``root``,
``width``, ``height``; ``annotations``: ``image_id``, ``category_id``, ``bbox`` as ``[x, y, width, height]``;
``categories``: ``id``, ``name``), or the same under ``root/train``, ``root/val`` and ``root/test`` for splits of
one's own. Everything is checked before training, one line naming the first problem: a box outside its image or of
zero area, an annotation naming an image or a category the file does not have, an image file that is missing.
Images without annotations are kept as background, and the data summary counts them. Crowd annotations
(``iscrowd: 1``) are left out, as COCO's evaluation leaves them out of what a detector must find.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset
from torchvision import tv_tensors

from tlkit.datamodules.datasets import Split, open_rgb
from tlkit.datamodules.dense import DenseDataModule
from tlkit.datamodules.folders import check_folder
from tlkit.errors import ConfigError
from tlkit.protocols import TargetKind
from tlkit.randomness import sample_seed, seeded

INSTANCES = "instances.json"


def read_coco(path: Path) -> tuple[list[str], Split, int]:
    """(category names in id order, the images and each one's boxes, how many images have none) of a COCO
    instances file; a sample is an image path, its label ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [k, ...]}``
    with k the category's index in the names."""
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
        if annotation.get("iscrowd"):
            continue
        image = images[annotation["image_id"]]
        x, y, w, h = (float(v) for v in annotation["bbox"])
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image["width"] or y + h > image["height"]:
            raise ConfigError(
                f"Expected the box of {where} to have a positive area inside its image ({image['width']}x"
                f"{image['height']}), but it is [x, y, w, h] = {[x, y, w, h]}."
            )
        boxes[image["id"]].append([x, y, x + w, y + h])
        labels[image["id"]].append(index_of[annotation["category_id"]])
    samples, targets = [], []
    for image_id, image in images.items():
        file = path.parent / image["file_name"]
        if not file.is_file():
            raise ConfigError(
                f"Expected the image {image['file_name']!r} that {str(path)!r} names, but {str(file)!r} is missing."
            )
        samples.append(str(file))
        targets.append({"boxes": boxes[image_id], "labels": labels[image_id]})
    background = sum(1 for t in targets if not t["labels"])
    return [str(c["name"]) for c in categories], Split(samples, targets), background


class DetectionDataset(Dataset):
    """(image, {"boxes": (K, 4) float32 x1, y1, x2, y2, "labels": (K,) int64}) pairs, transformed together."""

    def __init__(self, split: Split, transform: Any) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split.samples)

    def __getitem__(self, index: int):
        image = open_rgb(self.split.samples[index])
        target = self.split.labels[index]
        boxes = torch.tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        boxed = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
            "labels": torch.tensor(target["labels"], dtype=torch.int64),
        }
        with seeded(sample_seed(index)):  # a training index carries its augmentation seed
            image, boxed = self.transform(image, boxed)
        return image.as_subclass(torch.Tensor), {k: v.as_subclass(torch.Tensor) for k, v in boxed.items()}


def collate_detections(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Images stacked, targets as a list (each image has its own number of boxes)."""
    return torch.stack([image for image, _ in batch]), [target for _, target in batch]


class CocoDetectionDataModule(DenseDataModule):
    """Images and boxes in COCO's format (the layout above).

    Args:
        root: the folder holding ``instances.json`` and the images it names (or ``train/``, ``val/``, ``test/``,
            each holding its own).

    The other arguments are `DenseDataModule`'s and `ImageDataModule`'s.

    Examples:
        >>> dm = CocoDetectionDataModule(root="data/parts", image_size=320)
    """

    classes_hint = "a detector needs one category or more"
    collate = staticmethod(collate_detections)

    def __init__(self, *, root: str, **kwargs) -> None:
        super().__init__(**kwargs)

    @property
    def target_kind(self) -> TargetKind:
        return "boxes"

    def describe_source(self) -> str:
        return repr(self.hparams.root)

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        return read_coco_splits(Path(self.hparams.root).expanduser())

    def check_split(self, split: Split, classes: list[str]) -> None:
        """Checked as it was read (`read_coco`)."""

    def pair_dataset(self, split: Split, transform: Any) -> Dataset:
        return DetectionDataset(split, transform)


def read_coco_splits(root: Path) -> tuple[list[str], dict[str, Split]]:
    """``root/instances.json``, or ``root/<split>/instances.json`` for each of train, val and test present."""
    check_folder(root, "`root`")
    if (root / INSTANCES).is_file():
        folders = {"train": root}
    else:
        folders = {name: root / name for name in ("train", "val", "test") if (root / name / INSTANCES).is_file()}
        if "train" not in folders:
            raise ConfigError(f"Expected {str(root)!r} to hold {INSTANCES}, or train/{INSTANCES} (with val/, test/).")
    classes: list[str] | None = None
    splits, background = {}, {}
    for name, folder in folders.items():
        names, split, empty = read_coco(folder / INSTANCES)
        if classes is not None and names != classes:
            raise ConfigError(
                f"Expected {str(folder / INSTANCES)!r} to have the training split's categories "
                f"({', '.join(classes)}), but it has {', '.join(names)}."
            )
        classes, splits[name], background[name] = names, split, empty
    counts = ", ".join(f"{name} {len(s.samples)} ({background[name]} without boxes)" for name, s in splits.items())
    rank_zero_info(f"COCO data in {str(root)!r}: {counts} images; images without boxes are kept as background.")
    return classes or [], splits
