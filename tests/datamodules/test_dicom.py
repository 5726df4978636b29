"""DICOM files as scanners and PACS write them (pydicom's own test files: CT with intercept -1024, MR little- and
big-endian, RLE and JPEG 2000, multi-frame, truncated, JPEG-LS) through the folder datamodule and the command."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests._console import run_here_captured
from tlkit.datamodules import ImageFolderDataModule, open_rgb
from tlkit.datamodules.dicom import DicomProblem, DicomReading
from tlkit.errors import ConfigError

pydicom = pytest.importorskip("pydicom")
FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def test_ct_values_are_rescaled_to_hounsfield_units_and_windowed():
    path = FILES / "CT_small.dcm"
    data = pydicom.dcmread(path)
    assert float(data.RescaleIntercept) == -1024
    hounsfield = data.pixel_array * float(data.RescaleSlope) + float(data.RescaleIntercept)
    image = np.asarray(DicomReading(window=(40.0, 400.0)).open(path))
    assert image.shape == (*hounsfield.shape, 3) and image.dtype == np.uint8
    assert (image[hounsfield <= 40 - 0.5 - 199.5] == 0).all()  # below the soft-tissue window: black
    assert (image[hounsfield > 40 - 0.5 + 199.5] == 255).all()  # above it: white
    inside = (hounsfield > -100) & (hounsfield < 100)
    expected = ((hounsfield[inside] - 39.5) / 399 + 0.5) * 255
    assert np.abs(image[inside][:, 0] - expected).max() <= 0.5 + 1e-6
    lung = np.asarray(DicomReading(window=(-600.0, 1500.0)).open(path))
    assert not np.array_equal(lung, image)


def test_monochrome1_is_inverted_and_byte_order_does_not_matter(tmp_path):
    data = pydicom.dcmread(FILES / "MR_small.dcm")
    data.PhotometricInterpretation = "MONOCHROME1"
    data.save_as(tmp_path / "inverted.dcm")
    plain = np.asarray(open_rgb(FILES / "MR_small.dcm"))
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "inverted.dcm")), 255 - plain)
    for variant in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm"):
        assert np.array_equal(np.asarray(open_rgb(FILES / variant)), plain), variant
    shutil.copy(FILES / "MR_small.dcm", tmp_path / "IM0001")  # no suffix, as PACS exports name them
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "IM0001")), plain)


def test_multi_frame_files_are_refused_unless_a_frame_is_named():
    path = FILES / "SC_rgb_rle_2frame.dcm"
    with pytest.raises(DicomProblem, match="2 frames: set `dicom_frame`"):
        DicomReading().open(path)
    frames = pydicom.dcmread(path).pixel_array
    assert np.array_equal(np.asarray(DicomReading(frame=1).open(path)), frames[1])
    with pytest.raises(DicomProblem, match="has no frame 5"):
        DicomReading(frame=5).open(path)


def _scan_folder(root: Path) -> Path:
    """Two classes of real scans: CT (plain, JPEG 2000) and MR (four encodings), four files each."""
    for name, sources in {
        "ct": ["CT_small.dcm", "693_J2KI.dcm", "CT_small.dcm", "693_J2KI.dcm"],
        "mr": ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_implicit.dcm"],
    }.items():
        (root / name).mkdir(parents=True)
        for i, source in enumerate(sources):
            shutil.copy(FILES / source, root / name / f"{i}.dcm")
    return root


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("MR_truncated.dcm", r"bad\.dcm' is a DICOM file whose pixel data cannot be read"),
        (
            "JPEGLSNearLossless_16.dcm",
            r"compressed as 'JPEG-LS Lossy .*', which no installed decoder reads: pip install 'pylibjpeg>=2.0' "
            r"'pylibjpeg-libjpeg>=2.1'",
        ),
        ("SC_rgb_rle_2frame.dcm", r"a DICOM file of 2 frames: set `dicom_frame`"),
    ],
)
def test_a_bad_dicom_file_is_one_line_naming_it_before_training(tmp_path, source, message):
    root = _scan_folder(tmp_path / "scans")
    shutil.copy(FILES / source, root / "mr" / "bad.dcm")
    with pytest.raises(ConfigError, match=message) as error:
        ImageFolderDataModule(str(root)).setup("fit")
    assert "\n" not in str(error.value)


def test_a_folder_of_scans_fits_and_predicts_through_the_command(tmp_path, capfd):
    root = _scan_folder(tmp_path / "scans")
    fit = [
        "fit",
        "--model=FineTuning",
        "--model.backbone=test_resnet",
        "--model.weights=null",
        "--data=ImageFolderDataModule",
        f"--data.data_dir={root}",
        "--data.image_size=32",
        "--data.window=[40, 400]",
        "--trainer.max_epochs=1",
        "--trainer.enable_model_summary=false",
    ]
    result = run_here_captured(fit, tmp_path, capfd)
    assert result.returncode == 0, result.stderr
    checkpoint = tmp_path / "logs" / "tlkit" / "version_0" / "checkpoints" / "last.ckpt"
    predict = ["predict", "--config", str(checkpoint.parents[1] / "config.yaml"), f"--ckpt_path={checkpoint}"]
    result = run_here_captured([*predict, f"--data.predict_dir={root / 'mr'}"], tmp_path, capfd)
    assert result.returncode == 0, result.stderr
    written = next((checkpoint.parents[1] / "predictions").glob("*.csv")).read_text().splitlines()
    assert len(written) == 1 + 4 and all(".dcm" in line for line in written[1:])
