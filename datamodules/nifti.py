"""NIfTI volumes as 2-D images: a volume sliced along one anatomical axis, each slice a sample; a label volume on the
same grid sliced the same way into masks.

Slices are taken in the closest canonical (RAS) orientation whatever the file's storage order, so ``slice_axis: 2``
is axial (inferior to superior), 1 coronal and 0 sagittal in every file; nibabel applies the file's scaling. Reading
needs nibabel (``pip install 'tlkit[medical]'``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tlkit.errors import config_error, import_optional

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _nibabel():
    return import_optional("nibabel", "to read NIfTI files", "medical")


class VolumeProblem(ValueError):
    """A NIfTI file that cannot be used, and why (one line)."""


@dataclass(frozen=True)
class VolumeSlice:
    """One 2-D slice of a volume file: the file, the canonical axis it is cut along and the slice's index."""

    path: Path
    axis: int
    index: int

    def __str__(self) -> str:
        return f"{self.path}#{'xyz'[self.axis]}={self.index}"

    def fingerprint(self) -> bytes:
        """What the feature cache keys this slice by: the file's identity and the cut."""
        stat = self.path.stat()
        return f"{self.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{self.axis}:{self.index}".encode()


@dataclass(frozen=True)
class Orientation:
    """Where a canonical (RAS) axis lies in a file's array, and whether it runs backwards there."""

    array_axis: tuple[int, int, int]  # canonical axis -> array axis
    flipped: tuple[bool, bool, bool]  # canonical axis -> stored in reverse

    @classmethod
    def of(cls, image) -> Orientation:
        nibabel = _nibabel()
        ornt = nibabel.io_orientation(image.affine)  # per array axis: (canonical axis, +1 or -1)
        array_axis = [0, 0, 0]
        flipped = [False, False, False]
        for axis, (canonical, direction) in enumerate(ornt[:3]):
            array_axis[int(canonical)] = axis
            flipped[int(canonical)] = direction < 0
        return cls(tuple(array_axis), tuple(flipped))

    def cut(self, image, axis: int, index: int) -> np.ndarray:
        """The slice ``index`` along canonical ``axis`` as a 2-D array in canonical order (rows: the lower remaining
        canonical axis), read from the file's data proxy without loading the volume."""
        size = image.shape[self.array_axis[axis]]
        stored = size - 1 - index if self.flipped[axis] else index
        where = [slice(None)] * 3
        where[self.array_axis[axis]] = stored
        plane = np.asanyarray(image.dataobj[tuple(where)])
        rest = [a for a in range(3) if a != axis]  # canonical axes kept, in order
        kept_array_axes = [self.array_axis[a] for a in rest]
        order = np.argsort(np.argsort(kept_array_axes))  # where each kept canonical axis sits in ``plane``
        plane = np.transpose(plane, (int(order[0]), int(order[1])))
        for position, canonical in enumerate(rest):
            if self.flipped[canonical]:
                plane = np.flip(plane, axis=position)
        return np.ascontiguousarray(plane)


@dataclass(frozen=True)
class NiftiReading:
    """How NIfTI volumes become 2-D images (the datamodule arguments ``slice_axis`` and ``window``).

    Attributes:
        axis: the canonical axis slices are cut along: 2 axial, 1 coronal, 0 sagittal.
        window: (centre, width) in the file's units (CT: Hounsfield units); None: the file's display range
            (``cal_min``/``cal_max``) where set, else the volume's full range.
    """

    axis: int = 2
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.axis not in (0, 1, 2):
            raise config_error("slice_axis", "0 (sagittal), 1 (coronal) or 2 (axial)", self.axis)

    def slices(self, path: Path) -> list[VolumeSlice]:
        """Every slice of the volume along the axis (its header only is read); a file that is no 3-D volume raises
        `VolumeProblem`."""
        image = self._load(path)
        shape = image.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise VolumeProblem(
                f"a {len(shape)}-D image of shape {tuple(shape)}; tlkit slices 3-D volumes (a 4-D series: split it "
                "into one file per volume)"
            )
        size = shape[Orientation.of(image).array_axis[self.axis]]
        return [VolumeSlice(path, self.axis, index) for index in range(size)]

    def check_readable(self, path: Path) -> None:
        """Decode the whole volume once (a truncated file raises `VolumeProblem` here, not mid-epoch)."""
        try:
            np.asanyarray(self._load(path).dataobj)
        except VolumeProblem:
            raise
        except Exception as err:  # noqa: BLE001 (gzip, zlib and nibabel raise several types for damaged data)
            raise VolumeProblem(f"an unreadable or truncated NIfTI volume ({err})") from None

    def open(self, sample: VolumeSlice) -> Image.Image:
        """The slice as an 8-bit RGB image."""
        image = self._load(sample.path)
        values = Orientation.of(image).cut(image, sample.axis, sample.index).astype(np.float64)
        if self.window is not None:
            centre, width = self.window
            low, high = centre - width / 2.0, centre + width / 2.0
        else:
            low, high = _display_range(str(sample.path), sample.path.stat().st_mtime_ns)
        grey = np.clip((values - low) / max(high - low, 1e-12) * 255.0, 0.0, 255.0)
        return Image.fromarray(grey.round().astype(np.uint8), mode="L").convert("RGB")

    def labels(self, sample: VolumeSlice) -> np.ndarray:
        """The slice of a label volume as an (H, W) int64 class-index mask; labels must be whole numbers."""
        image = self._load(sample.path)
        values = Orientation.of(image).cut(image, sample.axis, sample.index)
        mask = np.rint(values).astype(np.int64)
        if not np.array_equal(mask, values):
            raise VolumeProblem(f"a label volume with values that are not whole numbers ({sample})")
        return mask

    @staticmethod
    def _load(path: Path):
        nibabel = _nibabel()
        try:
            return nibabel.load(str(path))
        except Exception as err:  # noqa: BLE001 (nibabel raises several types for damaged files)
            text = str(err).strip().splitlines()
            raise VolumeProblem(f"not a readable NIfTI file ({text[0] if text else type(err).__name__})") from None


def same_grid(image_path: Path, label_path: Path) -> str | None:
    """Why a label volume is not on its image's grid (shape and voxel-to-world affine), or None if it is."""
    nibabel = _nibabel()
    image, labels = nibabel.load(str(image_path)), nibabel.load(str(label_path))
    if image.shape[:3] != labels.shape[:3]:
        return f"of shape {labels.shape[:3]} where its image {str(image_path)!r} is {image.shape[:3]}"
    if not np.allclose(image.affine, labels.affine, atol=1e-3):
        return f"placed differently in space (affine) from its image {str(image_path)!r}"
    return None


@functools.lru_cache(maxsize=256)
def _display_range(path: str, mtime_ns: int) -> tuple[float, float]:
    """A volume's display range: its header's cal_min/cal_max where set, else its values' range; computed once per
    file (and modification) in each process, since every slice of a volume shares it."""
    nibabel = _nibabel()
    image = nibabel.load(path)
    low, high = float(image.header["cal_min"]), float(image.header["cal_max"])
    if high > low:
        return low, high
    values = np.asanyarray(image.dataobj)
    return float(values.min()), float(values.max())
