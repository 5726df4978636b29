"""Scan and validate ImageFolder trees (``root/<class>/<image>``) before any training starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from tlkit.datamodules.dicom import DICOM_SUFFIXES
from tlkit.datamodules.image_checks import ImageChecks
from tlkit.datamodules.medical import MedicalReading
from tlkit.datamodules.nifti import NIFTI_SUFFIXES
from tlkit.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: What a folder may hold besides: DICOM files and NIfTI volumes (`MedicalReading`).
MEDICAL_EXTENSIONS = (*DICOM_SUFFIXES, *NIFTI_SUFFIXES)
InvalidPolicy = Literal["error", "skip"]


def check_images(
    files: list[Path], verify: bool, medical: MedicalReading | None = None
) -> list[tuple[list[Any], str | None]]:
    """For each file: the samples it holds (itself; a NIfTI volume's slices) and None, or none and why it cannot be
    used. With ``verify``, plain images are decoded in full once and remembered (`ImageChecks`: a later setup reads
    only their sizes and times); DICOM files (``.dcm``, or no suffix and DICOM's header) and NIfTI volumes are read
    as ``medical`` says."""
    medical = medical or MedicalReading()
    plain = [p for p in files if not medical.reads_file(p) and p.suffix.lower() in IMAGE_EXTENSIONS]
    decoded = ImageChecks().problems(plain) if verify else {}
    found = []
    for path in files:
        if medical.reads_file(path):
            found.append(medical.samples(path, verify))
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            expected = ", ".join(IMAGE_EXTENSIONS + MEDICAL_EXTENSIONS)
            found.append(([], f"not an image file (expected one of {expected})"))
        else:
            problem = decoded.get(path)
            found.append(([], problem) if problem is not None else ([path], None))
    return found


def check_folder(path: Path, what: str) -> None:
    """Raise naming ``path`` if it is missing or is a file rather than a folder."""
    if path.is_file():
        raise ConfigError(f"Expected {what} {str(path)!r} to be a folder, but it is a file.")
    if not path.is_dir():
        raise ConfigError(f"Expected {what} {str(path)!r} to exist, but it does not.")


def _files_under(folder: Path) -> list[Path]:
    """Every visible file under ``folder``, at any depth, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _usable_images(
    files: list[Path],
    root: Path,
    what: str,
    on_invalid: InvalidPolicy,
    verify_images: bool,
    skipped: list[str],
    medical: MedicalReading | None = None,
) -> list[Any]:
    """The readable images among ``files``; each other file raises naming it (``on_invalid="error"``) or is added to
    ``skipped`` as "<path>: <why>" (``"skip"``). ``what`` names ``root`` in the error ("predict folder ")."""
    images = []
    for path, (samples, problem) in zip(files, check_images(files, verify_images, medical)):
        if problem is None:
            images += samples
        elif on_invalid == "skip":
            skipped.append(f"{path}: {problem}")
        else:
            raise ConfigError(
                f"Expected every file under {what}{str(root)!r} to be a readable image, but {str(path)!r} is "
                f"{problem}. Remove it, or set `on_invalid: skip`."
            )
    return images


def scan_images(
    root: Path, on_invalid: InvalidPolicy = "skip", verify_images: bool = True, medical: MedicalReading | None = None
) -> list[Any]:
    """Every image under ``root`` (any depth, no class folders needed), sorted; for labelling new images.

    A file that is no readable image is an error naming it (``on_invalid="error"``), or skipped with one line on
    stderr naming it and why (``"skip"``): a prediction is never silently missing.
    """
    check_folder(root, "predict folder")
    files = _files_under(root)
    skipped: list[str] = []
    images = _usable_images(files, root, "predict folder ", on_invalid, verify_images, skipped, medical)
    if skipped:
        heading = f"tlkit: skipped {len(skipped)} of {len(files)} file(s) in {str(root)!r}:"
        rank_zero_info("\n  ".join([heading, *skipped]))
    if not images:
        raise ConfigError(
            f"Expected predict folder {str(root)!r} to contain images ({', '.join(IMAGE_EXTENSIONS)}), but it has none."
        )
    return images


def scan_image_folder(
    root: Path, on_invalid: InvalidPolicy = "error", verify_images: bool = True, medical: MedicalReading | None = None
) -> tuple[list[str], list[Any], list[int]]:
    """Return (class names, image paths, labels) of an ImageFolder tree, checking every file.

    Raises:
        ConfigError: naming the path of a missing folder, a folder without class folders, an empty class folder, or
            (with ``on_invalid="error"``) the first non-image or unreadable file.
    """
    classes = class_folders(root, "image")
    paths: list[Path] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, name in enumerate(classes):
        found = _usable_images(_files_under(root / name), root, "", on_invalid, verify_images, skipped, medical)
        if not found:
            raise ConfigError(f"Expected class folder {str(root / name)!r} to contain images, but it has none.")
        paths += found
        labels += [label] * len(found)
    if skipped:
        rank_zero_warn(f"Skipped {len(skipped)} unusable file(s): " + "; ".join(skipped))
    return classes, paths, labels


def class_folders(root: Path, sample: str) -> list[str]:
    """The class folders of ``root`` (``root/<class>/<sample>``), sorted; a missing folder, or one without class
    folders, is one line naming it."""
    check_folder(root, "data folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ConfigError(
            f"Expected data folder {str(root)!r} to contain one sub-folder per class (root/<class>/<{sample}>), "
            "but it has none."
        )
    return classes


def check_same_classes(reference: list[str], other: list[str], reference_dir: Path, other_dir: Path) -> None:
    """Raise naming the differing class names if two folders disagree on the class set."""
    if reference != other:
        only_ref = sorted(set(reference) - set(other))
        only_other = sorted(set(other) - set(reference))
        raise ConfigError(
            f"Expected {str(other_dir)!r} to have the same class folders as {str(reference_dir)!r}, but "
            f"only in {reference_dir.name}: {only_ref or 'none'}; only in {other_dir.name}: {only_other or 'none'}."
        )
