"""DICOM files as 8-bit RGB images: pixel values rescaled to the modality's units (CT's Hounsfield units), a window
applied (the file's, or one the configuration gives), MONOCHROME1 inverted, colour and palette images as RGB.

Reading needs pydicom (``pip install 'tlkit[medical]'``); a file compressed with a codec whose decoder is not
installed (JPEG-LS, lossless or 12-bit JPEG) is one line naming the packages that decode it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tlkit.errors import config_error, import_optional

DICOM_SUFFIXES = (".dcm", ".dicom")
#: Every DICOM file (Part 10) has these four bytes after a 128-byte preamble; many have no file name suffix.
DICOM_MAGIC = b"DICM"


def is_dicom(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or a file without a suffix that starts as DICOM files do."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix:
        return False
    try:
        with path.open("rb") as file:
            return file.read(132)[128:] == DICOM_MAGIC
    except OSError:
        return False


def _pydicom():
    return import_optional("pydicom", "to read DICOM files", "medical")


class DicomProblem(ValueError):
    """A DICOM file that cannot be used, and why (one line)."""


@dataclass(frozen=True)
class DicomReading:
    """How DICOM files become images (the datamodule arguments ``dicom_window`` and ``dicom_frame``).

    Attributes:
        window: (centre, width) in the modality's units after rescaling (CT: Hounsfield units, e.g. (40, 400) for
            soft tissue, (-600, 1500) for lung); None: the file's own window, else the image's full range.
        frame: which frame of a multi-frame file to read; None refuses multi-frame files (a cine loop or a volume is
            not one image).
    """

    window: tuple[float, float] | None = None
    frame: int | None = None

    def __post_init__(self) -> None:
        if self.window is not None and (len(self.window) != 2 or self.window[1] <= 0):
            raise config_error("window", "[centre, width] with a width > 0, or null", list(self.window))
        if self.frame is not None and self.frame < 0:
            raise config_error("dicom_frame", "a frame index >= 0, or null", self.frame)

    @classmethod
    def from_arguments(cls, window: list[float] | None, frame: int | None) -> DicomReading:
        return cls(tuple(float(v) for v in window) if window is not None else None, frame)

    def open(self, path: Path) -> Image.Image:
        """The file as an 8-bit RGB image; a problem raises `DicomProblem` saying what it is."""
        pydicom = _pydicom()
        try:
            data = pydicom.dcmread(path)
        except Exception as err:  # noqa: BLE001 (pydicom raises several types for damaged files)
            raise DicomProblem(f"not a readable DICOM file ({_first_line(err)})") from None
        if "PixelData" not in data:
            raise DicomProblem("a DICOM file without pixel data (a report or structure set, not an image)")
        frames = int(data.get("NumberOfFrames", 1) or 1)
        if frames > 1 and self.frame is None:
            raise DicomProblem(f"a DICOM file of {frames} frames: set `dicom_frame` to the index of the one to read")
        if self.frame is not None and self.frame >= frames:
            raise DicomProblem(f"a DICOM file of {frames} frame(s), which has no frame {self.frame} (`dicom_frame`)")
        pixels = _decoded(data)
        if frames > 1:
            pixels = pixels[self.frame]
        return self._to_rgb(data, pixels)

    def _to_rgb(self, data: Any, pixels: np.ndarray) -> Image.Image:
        from pydicom.pixels import apply_color_lut, apply_modality_lut

        photometric = str(data.get("PhotometricInterpretation", "MONOCHROME2"))
        if photometric == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, data)
        if pixels.ndim == 3:  # RGB (pydicom turns YBR into RGB); 16-bit colour scaled by its type's range
            top = 255.0 if pixels.dtype == np.uint8 else float(np.iinfo(pixels.dtype).max)
            return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8), mode="RGB")
        values = apply_modality_lut(pixels, data).astype(np.float64)  # rescale slope and intercept
        window = self.window or _file_window(data)
        if window is not None:
            centre, width = window
            # DICOM PS3.3 C.11.2.1.2: the linear VOI function
            grey = np.clip(((values - (centre - 0.5)) / max(width - 1.0, 1e-12) + 0.5) * 255.0, 0.0, 255.0)
        else:
            low, high = float(values.min()), float(values.max())
            grey = (values - low) / max(high - low, 1e-12) * 255.0
        if photometric == "MONOCHROME1":  # low values are white
            grey = 255.0 - grey
        return Image.fromarray(grey.round().astype(np.uint8), mode="L").convert("RGB")

    def describe(self) -> str:
        """What reading does, for export's preprocessing recipe."""
        window = f"window centre {self.window[0]:g} width {self.window[1]:g}" if self.window else "the file's window"
        return f"DICOM: rescale slope/intercept, {window} (else the image's range) to 0-255, MONOCHROME1 inverted" + (
            f", frame {self.frame}" if self.frame is not None else ""
        )


def _decoded(data: Any) -> np.ndarray:
    try:
        return data.pixel_array
    except RuntimeError as err:  # pydicom: no installed plugin decodes this transfer syntax
        syntax = data.file_meta.TransferSyntaxUID.name
        raise DicomProblem(
            f"compressed as {syntax!r}, which no installed decoder reads: pip install {_decoder_packages(str(err))}"
        ) from None
    except Exception as err:  # noqa: BLE001 (truncated or inconsistent pixel data)
        raise DicomProblem(f"a DICOM file whose pixel data cannot be read ({_first_line(err)})") from None


def _decoder_packages(message: str) -> str:
    """The pip requirements of pydicom's pylibjpeg plugin as its message lists them, else pylibjpeg's decoders."""
    found = re.search(r"pylibjpeg - requires (.+)", message)
    if found:
        return " ".join(f"'{part.strip()}'" for part in found.group(1).split(" and "))
    return "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"


def _file_window(data: Any) -> tuple[float, float] | None:
    """The file's first window (centre, width), if it has one."""
    centre, width = data.get("WindowCenter"), data.get("WindowWidth")
    if centre is None or width is None:
        return None
    try:
        return _first(centre), _first(width)
    except (TypeError, ValueError):
        return None


def _first(value: Any) -> float:
    """A value of a tag that may hold several (pydicom's MultiValue): its first."""
    return float(value[0]) if isinstance(value, Sequence) and not isinstance(value, str) else float(value)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
