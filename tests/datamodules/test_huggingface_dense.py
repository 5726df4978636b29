"""Hugging Face datasets of boxes and masks, in the layout the Hub's detection and segmentation datasets use, made
with `datasets` from the bundled digit scenes and read through the datamodule and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._console import run_here_captured
from tlkit.datamodules import CocoDataModule, DigitScenesDataModule, HuggingFaceDenseDataModule
from tlkit.datamodules.segmentation import read_mask
from tlkit.errors import ConfigError

datasets = pytest.importorskip("datasets")
DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, Path]:
    """The digit scenes as files (COCO boxes, PNG masks) and the same as a saved DatasetDict: ``image``, ``objects``
    (``bbox`` [x, y, w, h], ``category`` ClassLabel) and ``annotation`` (the mask image)."""
    root = tmp_path_factory.mktemp("scenes")
    files = DigitScenesDataModule(targets="boxes", num_images=24, scene_size=48, root=str(root / "files"))
    folder = files.scenes_folder()
    files.setup("fit")
    coco = json.loads((folder / "train" / "instances.json").read_text())
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "objects": {
                "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                "category": datasets.List(datasets.ClassLabel(names=DIGITS)),
            },
            "annotation": datasets.Image(),
        }
    )
    ids = [c["id"] for c in sorted(coco["categories"], key=lambda c: c["id"])]  # the ClassLabel counts from 0
    rows = {"image": [], "objects": [], "annotation": []}
    for image in coco["images"]:
        mine = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        rows["image"].append(str(folder / "train" / image["file_name"]))
        rows["objects"].append(
            {"bbox": [a["bbox"] for a in mine], "category": [ids.index(a["category_id"]) for a in mine]}
        )
        rows["annotation"].append(str(folder / "train" / "masks" / (Path(image["file_name"]).stem + ".png")))
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)})
    data.save_to_disk(str(root / "hf"))
    return folder, root / "hf"


def test_boxes_read_as_the_coco_file_has_them(scenes):
    folder, saved = scenes
    hub = HuggingFaceDenseDataModule(str(saved), targets="boxes", val_fraction=0.25, test_fraction=0.25)
    hub.setup("fit")
    coco = CocoDataModule(root=str(folder / "train"), targets="boxes", val_fraction=0.25, test_fraction=0.25)
    coco.setup("fit")
    assert hub.classes == DIGITS and hub.target_kind == "boxes"
    for split in ("train", "val", "test"):
        assert [t["boxes"] for t in hub.splits[split].labels] == [t["boxes"] for t in coco.splits[split].labels]
        assert [t["labels"] for t in hub.splits[split].labels] == [t["labels"] for t in coco.splits[split].labels]
    image, target = hub.dataset("val", train=False)[0]
    assert image.shape[0] == 3 and target["boxes"].shape[1] == 4
    assert hub.data_source()["splits"] == {"train": "train"}


def test_masks_read_as_the_png_files_have_them(scenes):
    folder, saved = scenes
    classes = (folder / "classes.txt").read_text().split()
    hub = HuggingFaceDenseDataModule(str(saved), targets="masks", classes=classes, image_size=48)
    hub.setup("fit")
    sample, mask = hub.splits["train"].samples[0], hub.splits["train"].labels[0]
    png = folder / "train" / "masks" / f"{sorted((folder / 'train' / 'masks').iterdir())[sample.row].name}"
    assert np.array_equal(read_mask(mask), read_mask(str(png)))
    _, served = hub.dataset("train", train=False)[0]
    assert served.shape == (48, 48) and served.dtype == torch.int64
    with pytest.raises(ConfigError, match=r"Expected `classes` for the masks of .*: list the names in index order"):
        HuggingFaceDenseDataModule(str(saved), targets="masks").setup("fit")


def test_a_box_outside_its_image_and_a_missing_column_are_one_line(scenes, tmp_path):
    _, saved = scenes
    data = datasets.load_from_disk(str(saved))

    def stretch(row, index):
        if index == 3:
            row["objects"]["bbox"][0] = [40.0, 40.0, 30.0, 30.0]
        return row

    data.map(stretch, with_indices=True).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ConfigError, match=r"box of object 0 of .* split 'train' row 3 to have a positive area inside"):
        HuggingFaceDenseDataModule(str(tmp_path / "bad")).setup("fit")
    with pytest.raises(ConfigError, match=r"`objects_column` 'objs' to be a column of .* Closest: objects"):
        HuggingFaceDenseDataModule(str(saved), objects_column="objs").setup("fit")


def test_a_detector_fits_and_predicts_a_saved_dataset_through_the_command(scenes, tmp_path, capfd):
    _, saved = scenes
    fit = [
        "fit",
        "--model=FineTuning",
        "--model.backbone=test_resnet",
        "--model.weights=null",
        "--model.task=Detection",
        "--data=HuggingFaceDenseDataModule",
        f"--data.path={saved}",
        "--data.targets=boxes",
        "--data.image_size=48",
        "--data.batch_size=4",
        "--trainer.max_epochs=1",
        "--trainer.enable_model_summary=false",
    ]
    result = run_here_captured(fit, tmp_path, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "logs" / "tlkit" / "version_0"
    predict = ["predict", "--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
    result = run_here_captured(predict, tmp_path, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    written = [json.loads(line) for line in next((run / "predictions").glob("*.jsonl")).read_text().splitlines()]
    assert written and all(row["file"].startswith("train/") for row in written)
