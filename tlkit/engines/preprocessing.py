"""How an exported model's caller turns an image file into its input, as model.json states it: the recipe
(`preprocessing_spec`), the same recipe in PIL and numpy alone (`decode`, `preprocess`: what the export page's snippet
does), and the real images an export is verified on (`verification_images`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tlkit.backbones import DataConfig
from tlkit.datamodules.datasets import open_rgb
from tlkit.datamodules.medical import MedicalReading
from tlkit.datamodules.transforms import resize_size

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


#: How an image is brought to the model's input size: its shorter side resized to ``resize``, then the centre
#: ``crop`` x ``crop`` (classification, multi-label, regression); or the whole image resized to ``crop`` x ``crop``
#: (dense tasks, whose per-pixel outputs must map back onto the whole image).
RESIZE_MODES = ("shorter_side_then_centre_crop", "whole_image")


def preprocessing_spec(config: DataConfig, whole_image: bool = False) -> dict[str, Any]:
    """The JSON form of tlkit's evaluation transform for ``config`` (a dense task's with ``whole_image``)."""
    return {
        "resize_mode": RESIZE_MODES[1] if whole_image else RESIZE_MODES[0],
        "resize": config.image_size if whole_image else resize_size(config),
        "crop": config.image_size,
        "interpolation": config.interpolation,
        "mean": list(config.mean),
        "std": list(config.std),
        "divide_by": 255,
        "color": "RGB",
        "layout": "NCHW",
        "decode": DECODE_RECIPE,
    }


#: How a file becomes 8-bit RGB before the resize, as `decode` does and as tlkit trains (`to_rgb`), for model.json.
DECODE_RECIPE = (
    "16-bit and 32-bit integer greyscale (PIL modes I;16*, I) times 255/65535, clipped to 0..255 and rounded to 8-bit "
    "greyscale; then every mode (L, LA, P, RGBA with alpha dropped, CMYK) through PIL's convert('RGB'). Not covered: "
    "32-bit integer images with values above 65535 and floating-point images (mode F), which tlkit scales by their "
    "own range; DICOM files and NIfTI volumes, which tlkit reads to 8-bit with pydicom and nibabel (rescale "
    "slope/intercept, the file's or the configured window to 0..255, MONOCHROME1 inverted; volumes cut into slices "
    "in canonical orientation: tlkit.datamodules.medical.MedicalReading) before this recipe"
)


def decode(image: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB by `DECODE_RECIPE`, with PIL and numpy only: what code without tlkit does."""
    if image.mode.startswith("I"):
        pixels = np.clip(np.asarray(image, np.float64) * (255 / 65535), 0, 255).round().astype(np.uint8)
        image = Image.fromarray(pixels)
    return image.convert("RGB")


def preprocess(image: Image.Image, spec: dict[str, Any]) -> np.ndarray:
    """One opened image (any mode) as the exported model expects it, (3, crop, crop) float32, with PIL and numpy
    only: model.json's recipe, as the export page's snippet (docs/export.md) follows it."""
    image = decode(image)
    crop, resample = spec["crop"], _RESAMPLE[spec["interpolation"]]
    if spec.get("resize_mode") == "whole_image":
        image = image.resize((crop, crop), resample)
    else:
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = spec["resize"], int(spec["resize"] * long / short)
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        image = image.resize(size, resample)
        left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
        image = image.crop((left, top, left + crop, top + crop))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(spec["divide_by"])
    pixels = (pixels - np.asarray(spec["mean"], dtype=np.float32)) / np.asarray(spec["std"], dtype=np.float32)
    return pixels.transpose(2, 0, 1).copy()


def verification_images(folder: str | os.PathLike | None = None, limit: int = 16) -> list[Image.Image]:
    """Real images to verify on, as opened (in their own modes, not yet RGB): up to ``limit`` from ``folder``, else
    scikit-image's bundled photos, one of them in every mode tlkit reads (16-bit, palette, RGBA, CMYK, LA), and
    scikit-learn's digits (offline, always available)."""
    if folder is not None:
        from tlkit.datamodules.folders import scan_images

        return [_opened(path) for path in scan_images(Path(folder).expanduser())[:limit]]
    from tlkit.datamodules.digits import digit_images
    from tlkit.datamodules.digits_m import bundled_photos

    photos = [Image.fromarray(photo) for photo in bundled_photos()]
    digits, _ = digit_images()
    images = photos + _in_every_mode(photos[0]) + digits
    return images[: max(limit, len(photos) + 5)]


def _opened(path: Path) -> Image.Image:
    if MedicalReading.reads_file(path):  # as tlkit trains on it: already 8-bit RGB
        return open_rgb(MedicalReading().samples(path, verify=False)[0][0])
    with Image.open(path) as image:
        image.load()
        return image.copy()


def _in_every_mode(photo: Image.Image) -> list[Image.Image]:
    """``photo`` as the file types users bring hold it: 16-bit greyscale (full range), palette, RGBA, CMYK, LA."""
    grey16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return [
        Image.fromarray(grey16),
        photo.convert("P"),
        photo.convert("RGBA"),
        photo.convert("CMYK"),
        photo.convert("LA"),
    ]
