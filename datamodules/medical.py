"""`MedicalReading`: how medical image files among a datamodule's images are read, DICOM files (`DicomReading`) and
NIfTI volumes cut into slices (`NiftiReading`), from the datamodule arguments ``window``, ``dicom_frame`` and
``slice_axis``; every other file is a plain image for PIL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tlkit.datamodules.dicom import DicomProblem, DicomReading, is_dicom
from tlkit.datamodules.nifti import NiftiReading, VolumeProblem, VolumeSlice, is_nifti


@dataclass(frozen=True)
class MedicalReading:
    """The DICOM and NIfTI reading options of one datamodule.

    Attributes:
        dicom: how DICOM files become images (window, frame).
        nifti: how NIfTI volumes are sliced (axis, window).
    """

    dicom: DicomReading = field(default_factory=DicomReading)
    nifti: NiftiReading = field(default_factory=NiftiReading)

    @classmethod
    def from_arguments(cls, window: list[float] | None, dicom_frame: int | None, slice_axis: int) -> MedicalReading:
        centre_width = tuple(float(v) for v in window) if window is not None else None
        return cls(DicomReading(centre_width, dicom_frame), NiftiReading(slice_axis, centre_width))

    def reads(self, sample: Any) -> bool:
        """Whether ``sample`` is a DICOM file or a volume's slice (not a file for PIL)."""
        return isinstance(sample, VolumeSlice) or (isinstance(sample, (str, Path)) and is_dicom(Path(sample)))

    def open(self, sample: Any) -> Image.Image:
        """A DICOM file or a volume's slice as an 8-bit RGB image."""
        if isinstance(sample, VolumeSlice):
            return self.nifti.open(sample)
        return self.dicom.open(Path(sample))

    @staticmethod
    def reads_file(path: Path) -> bool:
        """Whether ``path`` is a DICOM or NIfTI file (read here, not by PIL)."""
        return is_dicom(path) or is_nifti(path)

    def samples(self, path: Path, verify: bool) -> tuple[list[Any], str | None]:
        """The samples a DICOM or NIfTI file holds (the file; a volume's slices) and None, or no samples and why the
        file cannot be used. ``verify`` decodes it in full (a truncated file fails here, not mid-epoch)."""
        try:
            if is_nifti(path):
                slices = self.nifti.slices(path)
                if verify:
                    self.nifti.check_readable(path)
                return list(slices), None
            if verify:
                self.dicom.open(path)
            return [path], None
        except (DicomProblem, VolumeProblem) as problem:
            return [], str(problem)


def label_slice(sample: VolumeSlice) -> np.ndarray:
    """A label volume's slice as an (H, W) class-index array."""
    return NiftiReading(sample.axis).labels(sample)
