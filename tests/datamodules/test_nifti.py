"""NIfTI volumes as nibabel ships them (big-endian 16-bit, float, reoriented, 4-D) sliced into images and masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tlkit.datamodules import ImageFolderDataModule, MaskFolderDataModule, open_rgb
from tlkit.datamodules.nifti import NiftiReading, VolumeProblem, VolumeSlice
from tlkit.datamodules.segmentation import read_mask
from tlkit.errors import ConfigError

nibabel = pytest.importorskip("nibabel")
from nibabel.testing import data_path  # noqa: E402

FILES = Path(data_path)


@pytest.mark.parametrize("name", ["anatomical.nii", "reoriented_anat_moved.nii"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_are_cut_in_canonical_orientation_without_loading_the_volume(name, axis):
    path = FILES / name
    canonical = nibabel.as_closest_canonical(nibabel.load(path)).get_fdata()
    slices = NiftiReading(axis=axis).slices(path)
    assert len(slices) == canonical.shape[axis]
    middle = slices[len(slices) // 2]
    image = np.asarray(NiftiReading(axis=axis).open(middle))[..., 0]
    low, high = canonical.min(), canonical.max()  # neither file sets a display range: the volume's own
    expected = np.round((np.take(canonical, middle.index, axis=axis) - low) / (high - low) * 255)
    assert np.array_equal(image, expected)  # the same voxels, in the same places, on the volume's scale


def test_the_volume_range_is_shared_by_its_slices_and_a_window_overrides_it():
    path = FILES / "anatomical.nii"
    canonical = nibabel.as_closest_canonical(nibabel.load(path)).get_fdata()
    low, high = canonical.min(), canonical.max()
    for index in (0, 12):  # an edge slice and the middle one, on the volume's one scale
        expected = np.round((canonical[:, :, index] - low) / (high - low) * 255)
        assert np.array_equal(np.asarray(open_rgb(VolumeSlice(path, 2, index)))[..., 0], expected)
    windowed = np.asarray(NiftiReading(window=(low + 10, 20.0)).open(VolumeSlice(path, 2, 12)))[..., 0]
    assert np.array_equal(windowed == 255, canonical[:, :, 12] >= low + 20)


def test_a_4d_series_is_refused_in_one_line():
    with pytest.raises(VolumeProblem, match=r"a 4-D image of shape \(128, 96, 24, 2\); tlkit slices 3-D volumes"):
        NiftiReading().slices(FILES / "example4d.nii.gz")


def test_a_folder_of_volumes_serves_each_slice_with_its_folders_class(tmp_path):
    for name, sources in {"a": ["anatomical.nii", "reoriented_anat_moved.nii"], "b": ["standard.nii.gz"] * 2}.items():
        (tmp_path / name).mkdir()
        for i, source in enumerate(sources):
            shutil.copy(FILES / source, tmp_path / name / f"{i}{''.join(Path(source).suffixes)}")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    every = [s for split in dm.splits.values() for s in zip(split.samples, split.labels)]
    assert len(every) == 25 + 22 + 7 + 7
    assert all(isinstance(sample, VolumeSlice) for sample, _ in every)
    assert {label for sample, label in every if sample.path.parent.name == "b"} == {1}
    image, _ = dm.dataset("train")[0]
    assert image.shape == (3, 16, 16)
    (tmp_path / "b" / "4d.nii.gz").write_bytes((FILES / "example4d.nii.gz").read_bytes())
    with pytest.raises(ConfigError, match=r"4d\.nii\.gz' is a 4-D image"):
        ImageFolderDataModule(str(tmp_path)).setup("fit")


def test_label_volumes_on_the_same_grid_become_masks(tmp_path):
    image = nibabel.load(FILES / "anatomical.nii")
    values = image.get_fdata()
    labels = (values > np.percentile(values, 60)).astype(np.uint8) + (values > np.percentile(values, 90))
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    shutil.copy(FILES / "anatomical.nii", tmp_path / "images" / "brain.nii")
    nibabel.save(nibabel.Nifti1Image(labels, image.affine), tmp_path / "masks" / "brain.nii.gz")
    (tmp_path / "classes.txt").write_text("background\ntissue\nbright\n")
    dm = MaskFolderDataModule(root=str(tmp_path), image_size=32, val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    canonical = nibabel.as_closest_canonical(nibabel.Nifti1Image(labels, image.affine)).get_fdata()
    pairs = [pair for split in dm.splits.values() for pair in zip(split.samples, split.labels)]
    assert sorted(cut.index for cut, _ in pairs) == list(range(25))  # every axial slice, once
    for cut, mask in pairs:
        assert cut.path.name == "brain.nii" and mask.path.name == "brain.nii.gz" and mask.index == cut.index
        assert np.array_equal(read_mask(mask), canonical[:, :, cut.index])
    _, served = dm.dataset("test", train=False)[0]
    assert served.shape == (32, 32) and set(served.unique().tolist()) <= {0, 1, 2}
    nibabel.save(nibabel.Nifti1Image(labels[:, :, :20], image.affine), tmp_path / "masks" / "brain.nii.gz")
    with pytest.raises(
        ConfigError, match=r"brain\.nii\.gz' on its image's grid, but it is of shape \(33, 41, 20\) where its image"
    ):
        MaskFolderDataModule(root=str(tmp_path)).setup("fit")
