"""`HuggingFaceDenseDataModule`: a Hugging Face dataset of images with boxed objects (detection, in the layout the
Hub's detection datasets use) or with masks (segmentation: a mask image per row)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from tlkit.datamodules.coco import BoxesOrMasks, checked_box
from tlkit.datamodules.datasets import Split, to_rgb
from tlkit.datamodules.dense import DenseDataModule
from tlkit.datamodules.hf_source import HubRow, HubSource, check_column, import_datasets
from tlkit.datamodules.huggingface import image_column
from tlkit.datamodules.segmentation import check_masks
from tlkit.errors import ConfigError, config_error


@dataclass(frozen=True)
class HubMask:
    """One row's mask in a dataset's mask column (`tlkit.protocols.StoredMask`)."""

    table: Any
    column: str
    row: int

    def array(self) -> np.ndarray:
        """The (H, W) class-index array: a palette image's indices, a greyscale image's values."""
        with self.table[self.row][self.column] as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise ConfigError(
                    f"Expected the masks of `mask_column` {self.column!r} to be single-channel index images (pixel = "
                    f"class index), but row {self.row}'s is mode {image.mode}."
                )
            return np.asarray(image).astype(np.int64)


class HuggingFaceDenseDataModule(BoxesOrMasks, DenseDataModule):
    """A Hugging Face dataset's images with boxes (``targets: boxes``) or masks (``targets: masks``).

    Boxes come from ``objects_column`` as the Hub's detection datasets keep them (``cppe-5``, ``detection-datasets``):
    per row, lists ``bbox`` (``[x, y, w, h]`` in pixels, COCO's convention; ``box_format: xyxy`` for corner pairs)
    and ``category`` (a ``ClassLabel``, whose names and order become the classes, or integers naming ``classes``).
    Masks come from ``mask_column``: an image per row whose pixel values are class indices (``ignore_index`` for
    unlabelled pixels), the classes named by ``classes`` in index order (0 first, background included).

    Args:
        path: a Hub name, a ``save_to_disk`` folder, a data file, or a builder with ``data_files``.
        name: the dataset's configuration.
        revision: a Hub branch, tag or commit.
        data_files: a builder's files.
        splits: which of the dataset's splits serve as ``train``, ``val`` and ``test``.
        targets: ``boxes`` (detection) or ``masks`` (segmentation).
        image_column: the column of images.
        objects_column: the column of each image's objects (``targets: boxes``).
        box_format: ``xywh`` (COCO's, the Hub's usual) or ``xyxy``.
        mask_column: the column of mask images (``targets: masks``).
        classes: class names in index order: needed for masks; for boxes where the category column has no names.

    The other arguments are `DenseDataModule`'s and `ImageDataModule`'s.

    Examples:
        >>> dm = HuggingFaceDenseDataModule("cppe-5", targets="boxes")
        >>> dm = HuggingFaceDenseDataModule("data/scenes", targets="masks", classes=["background", "road", "car"])
    """

    classes_hint = "a dense task needs its classes"

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        revision: str | None = None,
        data_files: Any = None,
        splits: dict[str, str | None] | None = None,
        targets: Literal["boxes", "masks"] = "boxes",
        image_column: str = "image",
        objects_column: str = "objects",
        box_format: Literal["xywh", "xyxy"] = "xywh",
        mask_column: str = "annotation",
        classes: list[str] | None = None,
        **kwargs,
    ) -> None:
        if targets not in ("boxes", "masks"):
            raise config_error("targets", "'boxes' (detection) or 'masks' (segmentation)", targets)
        if box_format not in ("xywh", "xyxy"):
            raise config_error("box_format", "'xywh' (COCO's) or 'xyxy'", box_format)
        super().__init__(**kwargs)
        self.source = HubSource(path, name, revision, data_files, dict(splits or {}))
        self._images: dict[str, Any] = {}
        self._record: dict[str, Any] | None = None

    def describe_source(self) -> str:
        return self.source.describe()

    def data_source(self) -> dict[str, Any] | None:
        """The dataset's path, config, revision, splits and fingerprints (`tlkit.protocols.RecordsDataSource`)."""
        return self._record

    def load_image(self, sample: HubRow) -> Image.Image:
        return to_rgb(self._images[sample.split][sample.row][self.hparams.image_column])

    def predict_sample_names(self) -> list[str]:
        return [str(sample) for sample in self._predict_split().samples]

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        hp = self.hparams
        available = self.source.open()
        names = self.source.pick_splits(available)
        target_column = hp.objects_column if hp.targets == "boxes" else hp.mask_column
        argument = "objects_column" if hp.targets == "boxes" else "mask_column"
        classes = self._classes(available[names["train"]], target_column)
        splits = {}
        for split, name in names.items():
            table = available[name]
            where = self.source.describe_split(name)
            check_column(table, hp.image_column, "image_column", where)
            check_column(table, target_column, argument, where)
            self._images[name] = image_column(table, hp.image_column, self.source.describe(), name)
            rows = [HubRow(name, table._fingerprint, i) for i in range(len(table))]
            if hp.targets == "boxes":
                labels = self._objects(table, where, classes)
            else:
                labels = [HubMask(table.select_columns([target_column]), target_column, i) for i in range(len(table))]
            splits[split] = Split(rows, labels)
        tables = {split: available[name] for split, name in names.items()}
        self._record = self.source.record(names, tables, {split: len(table) for split, table in tables.items()})
        return classes, splits

    def check_split(self, split: Split, classes: list[str]) -> None:
        """Boxes were checked as they were read; every mask against its image and the classes."""
        if self.hparams.targets == "masks":
            check_masks(split, len(classes), self.hparams.ignore_index, self.load_image)

    # ------------------------------------------------------------------------------------------- reading
    def _classes(self, table: Any, column: str) -> list[str]:
        given = list(self.hparams.classes) if self.hparams.classes else None
        if self.hparams.targets == "masks":
            if given is None:
                raise ConfigError(
                    f"Expected `classes` for the masks of {self.source.describe()} (their pixels are class indices "
                    "with no names): list the names in index order, the background (0) first."
                )
            return given
        check_column(table, column, "objects_column", f"{self.source.describe()} split 'train'")
        named = _category_names(table.features[column])
        if named is not None and given is not None and given != named:
            raise ConfigError(
                f"Expected `classes` to be unset or the category names of {self.source.describe()} "
                f"({', '.join(named)}), but got {', '.join(given)}."
            )
        if named is None and given is None:
            raise ConfigError(
                f"Expected the `category` of {column!r} in {self.source.describe()} to be a ClassLabel, or `classes` "
                "naming its integers (i is classes[i]), but it has neither."
            )
        return named or given or []

    def _objects(self, table: Any, where: str, classes: list[str]) -> list[dict[str, Any]]:
        hp = self.hparams
        sizes = _image_sizes(table, hp.image_column)
        targets = []
        for row, objects in enumerate(table[hp.objects_column]):
            place = f"{where} row {row}"
            rows = _as_rows(objects, place, hp.objects_column)
            width, height = sizes[row]
            boxes, labels = [], []
            for number, item in enumerate(rows):
                label = int(item["category"])
                if not 0 <= label < len(classes):
                    raise ConfigError(
                        f"Expected the category of every object to be a class index 0-{len(classes) - 1}, but object "
                        f"{number} of {place} has {label}."
                    )
                x, y, third, fourth = (float(v) for v in item["bbox"])
                w, h = (third - x, fourth - y) if hp.box_format == "xyxy" else (third, fourth)
                boxes.append(checked_box(x, y, w, h, width, height, f"object {number} of {place}"))
                labels.append(label)
            targets.append({"boxes": boxes, "labels": labels, "segments": [], "height": height, "width": width})
        return targets


def _category_names(feature: Any) -> list[str] | None:
    """The ClassLabel names of an objects column's ``category``: a dict of lists, or a list of dicts."""
    datasets = import_datasets()
    inner = feature.feature if isinstance(feature, (datasets.List, datasets.LargeList)) else feature
    category = inner.get("category") if isinstance(inner, dict) else None
    if isinstance(category, (datasets.List, datasets.LargeList)):
        category = category.feature
    return list(category.names) if isinstance(category, datasets.ClassLabel) else None


def _as_rows(objects: Any, place: str, column: str) -> list[dict[str, Any]]:
    """One image's objects as a list of dicts with ``bbox`` and ``category``, from either layout datasets uses."""
    if isinstance(objects, dict) and "bbox" in objects and "category" in objects:
        if len(objects["bbox"]) != len(objects["category"]):
            raise ConfigError(f"Expected as many boxes as categories in {column!r} of {place}, but they differ.")
        return [{"bbox": b, "category": c} for b, c in zip(objects["bbox"], objects["category"])]
    if isinstance(objects, list) and all(isinstance(o, dict) and "bbox" in o and "category" in o for o in objects):
        return objects
    raise ConfigError(
        f"Expected {column!r} of {place} to hold objects with `bbox` and `category` (the Hub's detection layout), "
        f"but it holds {type(objects).__name__}."
    )


def _image_sizes(table: Any, column: str) -> list[tuple[int, int]]:
    """Each row's image size from its header, without decoding the pixels."""
    datasets = import_datasets()
    raw = table.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    sizes = []
    for item in raw[column]:
        source = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
        with Image.open(source) as image:
            sizes.append(image.size)
    return sizes
