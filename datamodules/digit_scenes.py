"""`DigitScenesDataModule`: real handwritten MNIST digits composited onto real photographs at several scales, several
per image, with exact masks and boxes; bundled, offline, and written as files so the real loaders read them.

Each scene is a random crop of one of scikit-image's colour photographs with one to three digits drawn on it, each
at its own size and colour (a contrast to the photo beneath it); a digit's pixels are those its stroke covers by
more than half. The scenes are written once per setting under ``root`` in the layout `MaskFolderDataModule` reads
(``train/``, ``val/`` and ``test/``, each with ``images/`` and ``masks/``; ``classes.txt``: background, then the
digits) and with each split's COCO instances file (``instances.json``: a box per digit), the format detection reads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from tlkit.datamodules.coco import BoxesOrMasks, read_coco_splits
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.dense import DenseDataModule
from tlkit.datamodules.digits_m import bundled_photos
from tlkit.datamodules.mnist_digits import mnist_5k_images
from tlkit.datamodules.segmentation import check_masks, read_mask_splits
from tlkit.errors import config_error
from tlkit.tasks.segmentation import IGNORE_INDEX, index_mask_image

CLASSES = ["background", *(str(d) for d in range(10))]
SceneTargets = Literal["masks", "boxes"]
#: A digit's stroke covers a pixel by more than this share: the digit's; by less than ``EDGE`` share: the photo's;
#: in between: an anti-aliased edge, ignored (255) rather than guessed.
STROKE, EDGE = 0.5, 0.15
#: Part of the scenes folder's name: a change to what is rendered renders into a new folder.
RENDERING = 1


def render_scene(
    photo: np.ndarray, digits: list[tuple[np.ndarray, int]], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, list[int], tuple[int, int, np.ndarray]]]]:
    """One scene: the (size, size, 3) image, its index mask and each drawn digit's (class, [x, y, w, h] box, (top,
    left, its pixels in its square))."""
    h, w = photo.shape[:2]
    crop = int(rng.integers(size, max(size + 1, min(h, w) // 2)))
    top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    patch = Image.fromarray(photo[top : top + crop, left : left + crop]).resize((size, size), Image.BILINEAR)
    image = np.asarray(patch, dtype=np.float32)
    mask = np.zeros((size, size), dtype=np.uint8)
    placed: list[tuple[int, int, int]] = []  # (y, x, side) of each digit drawn, so digits do not overlap
    boxes = []
    for stroke, label in digits:
        side = int(rng.integers(round(0.3 * size), round(0.55 * size) + 1))
        for _ in range(30):
            y, x = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            if all(y + side <= py or py + ps <= y or x + side <= px or px + ps <= x for py, px, ps in placed):
                break
        else:
            continue  # no room left for this one
        placed.append((y, x, side))
        alpha = np.asarray(Image.fromarray(stroke).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
        region = image[y : y + side, x : x + side]
        colour = 255.0 - region.reshape(-1, 3).mean(axis=0)  # the photo's complement: the digit stands out
        colour = np.clip(colour + rng.uniform(-40, 40, size=3), 0, 255)
        region[:] = (1 - alpha[..., None]) * region + alpha[..., None] * colour
        cls = label + 1
        window = mask[y : y + side, x : x + side]
        window[alpha > STROKE] = cls
        window[(alpha > EDGE) & (alpha <= STROKE)] = IGNORE_INDEX
        ys, xs = np.nonzero(alpha > STROKE)
        box = [x + int(xs.min()), y + int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        boxes.append((cls, box, (y, x, alpha > STROKE)))
    return np.clip(image, 0, 255).round().astype(np.uint8), mask, boxes


def write_scenes(
    folder: Path, digits: list[tuple[np.ndarray, int]], count: int, size: int, seed: int, max_digits: int
) -> None:
    """``count`` scenes drawn from ``digits`` into ``folder`` (images/, masks/, instances.json with each digit's box
    and its pixels as RLE)."""
    from pycocotools import mask as rle

    rng = np.random.default_rng(seed)
    photos = bundled_photos()
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    coco: dict = {"images": [], "annotations": [], "categories": [{"id": k, "name": CLASSES[k]} for k in range(1, 11)]}
    for index in range(count):
        chosen = rng.choice(len(digits), size=int(rng.integers(1, max_digits + 1)), replace=False)
        photo = photos[int(rng.integers(len(photos)))]
        image, mask, boxes = render_scene(photo, [digits[i] for i in chosen], size, rng)
        name = f"scene_{index:05d}"
        Image.fromarray(image).save(folder / "images" / f"{name}.png")
        index_mask_image(mask).save(folder / "masks" / f"{name}.png")
        coco["images"].append({"id": index + 1, "file_name": f"images/{name}.png", "width": size, "height": size})
        for cls, box, (top, left, pixels) in boxes:
            instance = np.zeros((size, size), dtype=np.uint8, order="F")
            instance[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
            encoded = rle.encode(instance)
            segmentation = {"size": encoded["size"], "counts": encoded["counts"].decode()}
            annotation = {"id": len(coco["annotations"]) + 1, "image_id": index + 1, "category_id": cls}
            coco["annotations"].append(
                {**annotation, "bbox": box, "area": int(pixels.sum()), "segmentation": segmentation, "iscrowd": 0}
            )
    (folder / "instances.json").write_text(json.dumps(coco))


class DigitScenesDataModule(BoxesOrMasks, DenseDataModule):
    """Bundled scenes for segmentation and detection (see the module), no download.

    Targets (``targets``):

    - ``masks``: a class per pixel, 11 classes (background and the ten digits; for ``task: Segmentation``), read as
      `MaskFolderDataModule` reads its folders.
    - ``boxes``: a box per digit, 10 classes (the digits; for ``task: Detection``), read from the COCO instances
      files as `CocoDataModule` reads them.

    The MNIST digits are divided into training, validation and test pools first (``val_fraction``,
    ``test_fraction``, seeded), so no test scene shows a digit image seen in training.

    Args:
        targets: ``masks`` or ``boxes``.
        num_images: scenes in all, shared among the splits in the pools' proportions.
        scene_size: the side of each rendered scene, in pixels.
        max_digits: the most digits per scene (at least one).
        root: where the scenes are written (once per setting, in a folder named by them).
        min_crop_scale: the training crop keeps at least this share of the scene.

    The other arguments are `DenseDataModule`'s (``image_size`` defaults to ``scene_size``; no flips: digits are
    not mirror-symmetric).

    Examples:
        >>> dm = DigitScenesDataModule(targets="boxes", num_images=600, scene_size=64)
    """

    def __init__(
        self,
        *,
        targets: SceneTargets = "masks",
        num_images: int = 600,
        scene_size: int = 64,
        max_digits: int = 3,
        root: str = ".tlkit_cache/digit_scenes",
        image_size: int | None = None,
        hflip: bool = False,
        min_crop_scale: float = 0.5,
        test_fraction: float = 0.2,
        **kwargs,
    ) -> None:
        if targets not in ("masks", "boxes"):
            raise config_error("targets", "'masks' (segmentation) or 'boxes' (detection)", targets)
        if num_images < 10:
            raise config_error("num_images", "an integer >= 10", num_images)
        if scene_size < 16:
            raise config_error("scene_size", "at least 16 pixels", scene_size)
        if max_digits < 1:
            raise config_error("max_digits", "an integer >= 1", max_digits)
        super().__init__(
            image_size=image_size or scene_size,
            hflip=hflip,
            min_crop_scale=min_crop_scale,
            test_fraction=test_fraction,
            **kwargs,
        )
        self.hparams.image_size = image_size or scene_size  # (the hyperparameters hold this __init__'s own None)

    def scenes_folder(self) -> Path:
        hp = self.hparams
        name = f"n{hp.num_images}-s{hp.scene_size}-d{hp.max_digits}-seed{hp.seed}"
        name += f"-v{hp.val_fraction}-t{hp.test_fraction}-r{RENDERING}"
        return Path(hp.root).expanduser() / name

    def describe_source(self) -> str:
        return f"DigitScenesDataModule ({self.scenes_folder()})"

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        folder = self.scenes_folder()
        if not (folder / "classes.txt").is_file():
            self._write(folder)
        if self.hparams.targets == "boxes":
            classes, _, splits = read_coco_splits(folder)  # the scenes' own file numbers its categories from 1
            return classes, splits
        return read_mask_splits(folder)

    def check_split(self, split: Split, classes: list[str]) -> None:
        if self.hparams.targets == "masks":
            check_masks(split, len(classes), self.hparams.ignore_index)

    def _write(self, folder: Path) -> None:
        """Render into a fresh folder beside ``folder``, then rename it into place: another process (a DDP rank)
        rendering the same scenes at the same time finds a whole folder or none."""
        hp = self.hparams
        images, labels = mnist_5k_images()
        strokes = [(np.asarray(image.convert("L")), label) for image, label in zip(images, labels)]
        order = np.random.default_rng(hp.seed).permutation(len(strokes))
        n_test, n_val = round(hp.test_fraction * len(order)), round(hp.val_fraction * len(order))
        pools = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".rendering-", dir=folder.parent))
        try:
            for offset, (name, pool) in enumerate(pools.items()):
                count = max(1, round(hp.num_images * len(pool) / len(order)))
                digits = [strokes[i] for i in pool]
                write_scenes(staging / name, digits, count, hp.scene_size, hp.seed * 1000 + 31 + offset, hp.max_digits)
            (staging / "classes.txt").write_text("\n".join(CLASSES) + "\n")
            try:
                os.rename(staging, folder)
            except OSError:
                if not (folder / "classes.txt").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
