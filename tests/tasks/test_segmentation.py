"""Semantic segmentation: the backbones' multi-scale maps, the decoder, the loss and metrics, the mask folders and the
bundled scenes (their bad input in one line), and runs through the `tlkit` command with the shipped config."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchmetrics.classification import MulticlassJaccardIndex

from tests._console import REPO, run_here
from tests._snippets import page_snippet
from tests.conftest import quiet_trainer
from tlkit.backbones import Backbone
from tlkit.datamodules import DigitScenesDataModule, MaskFolderDataModule
from tlkit.engines.served_models import load_served_model
from tlkit.errors import ConfigError
from tlkit.metrics.iou import ClassIoU
from tlkit.strategies import FeatureExtraction, FineTuning
from tlkit.tasks import Segmentation
from tlkit.tasks.decoders import SemanticFPN
from tlkit.tasks.segmentation import index_mask_image

CONFIG = str(REPO / "configs" / "digit_scenes_segmentation.yaml")
TINY = [
    "--model.init_args.backbone=test_resnet",
    "--model.init_args.weights=null",
    "--data.init_args.num_images=40",
    "--data.init_args.scene_size=32",
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
]


def scenes(tmp_path: Path, **kwargs) -> DigitScenesDataModule:
    return DigitScenesDataModule(num_images=40, scene_size=32, root=str(tmp_path / "scenes"), batch_size=8, **kwargs)


# ------------------------------------------------------------------------------------------------- feature maps
@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "test_resnet", "torchvision:resnet18"])
def test_every_image_backbone_gives_maps_at_growing_strides_and_every_parameter_a_gradient(name):
    backbone = Backbone(name, weights=None, feature_maps=True)
    maps = backbone.feature_maps(torch.randn(2, 3, 64, 64))
    strides = [m.stride for m in backbone.feature_info]
    assert strides == sorted(set(strides)) and strides[-1] == 32
    assert [tuple(m.shape[1:]) for m in maps] == [
        (f.channels, 64 // f.stride, 64 // f.stride) for f in backbone.feature_info
    ]
    sum(m.sum() for m in maps).backward()
    unused = [n for n, p in backbone.named_parameters() if p.grad is None]
    assert not unused  # nothing after the last map is left to train (DDP would refuse the run)
    assert backbone(torch.randn(2, 3, 64, 64)).shape == (2, backbone.num_features)


def test_a_module_of_ones_own_gives_its_layer_groups_maps():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1)
    )
    backbone = Backbone(model=model, feature_maps=True)
    assert [(f.channels, f.stride) for f in backbone.feature_info] == [(8, 2), (16, 4)]


def test_a_text_backbone_refuses_feature_maps_in_one_line(tiny_bert):
    with pytest.raises(ConfigError, match="is a text model: it has no feature maps") as caught:
        FineTuning(f"hf:{tiny_bert}", task=Segmentation(), num_classes=3)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------- decoder, loss, metrics
@pytest.mark.parametrize("size", [64, 96])
def test_the_decoder_answers_every_pixel_of_the_input(size):
    backbone = Backbone("test_resnet", weights=None, feature_maps=True)
    decoder = SemanticFPN(backbone.feature_info, num_classes=5)
    logits = decoder(backbone.feature_maps(torch.randn(2, 3, size, size)))
    assert logits.shape == (2, 5, size, size)


def test_ignored_pixels_count_for_nothing_and_a_perfect_mask_has_no_dice_loss():
    task = Segmentation(dice_weight=1.0)
    targets = torch.randint(0, 3, (2, 8, 8))
    targets[:, :4] = 255
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    task.loss(logits, targets).backward()
    assert torch.all(logits.grad[:, :, :4] == 0)  # no gradient from an ignored pixel
    perfect = torch.nn.functional.one_hot(targets.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    assert Segmentation(dice_weight=1.0).loss(perfect, targets) < 1e-3


def test_each_class_iou_is_torchmetrics_per_class_jaccard():
    predictions, targets = torch.randint(0, 4, (3, 16, 16)), torch.randint(0, 4, (3, 16, 16))
    targets[0, :5] = 255
    reference = MulticlassJaccardIndex(4, average="none", ignore_index=255)(predictions, targets)
    for k in range(4):
        metric = ClassIoU(k, 255)
        metric.update(predictions, targets)
        assert float(metric.compute()) == pytest.approx(float(reference[k]), abs=1e-6)


# ------------------------------------------------------------------------------------------------------ the data
def test_bundled_scenes_are_files_with_exact_masks_and_boxes(tmp_path):
    dm = scenes(tmp_path)
    dm.setup("fit")
    assert dm.class_names() == ["background", *(str(d) for d in range(10))]
    assert {len(s.samples) for s in dm.splits.values()} and sum(len(s.samples) for s in dm.splits.values()) == 40
    folder = dm.scenes_folder()
    for split in ("train", "val", "test"):
        coco = json.loads((folder / split / "instances.json").read_text())
        by_image = {image["id"]: image for image in coco["images"]}
        for annotation in coco["annotations"]:
            image = by_image[annotation["image_id"]]
            x, y, w, h = annotation["bbox"]
            assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"] and w * h > 0
            mask = np.asarray(Image.open(folder / split / image["file_name"].replace("images/", "masks/")))
            assert annotation["category_id"] in mask[y : y + h, x : x + w]  # the digit's pixels are in its box
    masks = [np.asarray(Image.open(p)) for p in dm.splits["train"].labels]
    assert set(np.unique(np.concatenate([m.ravel() for m in masks]))) <= {*range(11), 255}
    again = scenes(tmp_path / "again")
    again.setup("fit")
    first, second = (Image.open(d.splits["train"].samples[0]) for d in (dm, again))
    assert np.array_equal(np.asarray(first), np.asarray(second))  # deterministic by seed


def test_augmentation_moves_the_mask_with_the_image(tmp_path):
    root = tmp_path / "halves"
    (root / "images").mkdir(parents=True), (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\nred\nblue\n")
    pixels = np.zeros((48, 48, 3), dtype=np.uint8)
    pixels[:, :24, 0], pixels[:, 24:, 2] = 255, 255
    mask = np.zeros((48, 48), dtype=np.uint8)
    mask[:, :24], mask[:, 24:] = 1, 2
    for i in range(4):
        Image.fromarray(np.roll(pixels, 6 * i, axis=1)).save(root / "images" / f"{i}.png")
        index_mask_image(np.roll(mask, 6 * i, axis=1)).save(root / "masks" / f"{i}.png")
    dm = MaskFolderDataModule(root=str(root), image_size=32, hflip=True, min_crop_scale=0.3, val_fraction=0.25)
    dm.data_config = None
    dm.setup("fit")
    dataset = dm.dataset("train")
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.shape == (3, 32, 32) and target.shape == (32, 32) and target.dtype == torch.int64
        red, blue = image[0], image[2]
        # Every pixel but those on a boundary (the image interpolated, the mask nearest-neighbour) agrees.
        assert (red[target == 1] > blue[target == 1]).float().mean() > 0.9
        assert (blue[target == 2] > red[target == 2]).float().mean() > 0.9


def write_pair(root: Path, name: str, size=(16, 16), mask_size=None, value=1) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True), (root / "masks").mkdir(exist_ok=True)
    Image.new("RGB", size).save(root / "images" / f"{name}.png")
    mask = np.zeros((mask_size or size)[::-1], dtype=np.uint8)
    mask[2:6, 2:6] = value
    index_mask_image(mask).save(root / "masks" / f"{name}.png")


@pytest.mark.parametrize(
    "problem, message",
    [
        ("value", r"mask '.*a\.png' to be class indices 0-2 or 255 \(ignored\), but it holds 7"),
        ("size", r"mask '.*a\.png' to have its image's size 16x16, but it is 12x16"),
        ("no mask", r"Expected a mask '.*masks/b\.png' for image '.*b\.png'"),
        ("no image", r"Expected an image named c\.\* in '.*images' for mask '.*c\.png'"),
        ("no classes", r"classes\.txt'.*the class names, one per line"),
    ],
)
def test_bad_masks_are_one_line_naming_the_file_before_training(tmp_path, problem, message):
    root = tmp_path / "data"
    write_pair(root, "a", value=7 if problem == "value" else 1, mask_size=(12, 16) if problem == "size" else None)
    if problem == "no mask":
        Image.new("RGB", (16, 16)).save(root / "images" / "b.png")
    if problem == "no image":
        index_mask_image(np.zeros((16, 16), dtype=np.uint8)).save(root / "masks" / "c.png")
    if problem != "no classes":
        (root / "classes.txt").write_text("background\ncat\ndog\n")
    with pytest.raises(ConfigError, match=message) as caught:
        MaskFolderDataModule(root=str(root)).setup("fit")
    assert "\n" not in str(caught.value)


# -------------------------------------------------------------------------------------------------------- runs
def test_the_shipped_config_fits_tests_predicts_masks_and_exports_what_predict_writes(tmp_path, capsys):
    run_here(["fit", "--config", CONFIG, *TINY], tmp_path)
    run = tmp_path / "logs" / "digit_scenes_segmentation" / "version_0"
    assert any("val_miou" in p.name for p in (run / "checkpoints").glob("epoch*"))  # selected on mean IoU
    last = str(run / "checkpoints" / "last.ckpt")
    run_here(["test", "--ckpt_path", last, "--trainer.enable_progress_bar=false"], tmp_path)
    assert "test/miou" in capsys.readouterr().out
    run_here(["predict", "--ckpt_path", last, "--trainer.enable_progress_bar=false"], tmp_path)
    rows = list(csv.DictReader((run / "predictions" / "predictions-last.csv").open()))
    dm = scenes(tmp_path)  # the run's own scenes folder is under tmp_path/.tlkit_cache; these are the same scenes
    dm.setup("test")
    assert len(rows) == len(dm.splits["test"].samples)
    for row in rows:
        image, mask = Image.open(tmp_path / row["file"]), Image.open(row["mask"])
        assert mask.mode == "P" and mask.size == image.size  # an index mask at the image's own size
        assert set(np.unique(np.asarray(mask))) <= set(range(11))
        assert Image.open(row["overlay"]).size == image.size
        shares = {name: float(share) for name, share in (pair.split(":") for pair in row["classes"].split())}
        assert set(shares) <= set(dm.class_names()) and sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    # The ONNX export, run by the export page's snippet (numpy and onnxruntime alone), writes the same masks.
    run_here(["export", "--ckpt_path", last, "--out_dir", str(tmp_path / "exported")], tmp_path)
    spec = json.loads((tmp_path / "exported" / "model.json").read_text())
    assert spec["preprocessing"]["resize_mode"] == "whole_image" and spec["output"]["shape"][2:] == [32, 32]
    (tmp_path / "snippet.py").write_text(page_snippet("export.md", "segmentation-snippet"))
    images = tmp_path / Path(rows[0]["file"]).parent
    subprocess.run([sys.executable, "snippet.py", "exported", str(images), "onnx_masks"], cwd=tmp_path, check=True)
    for row in rows:
        exported = np.asarray(Image.open(tmp_path / "onnx_masks" / Path(row["file"]).name))
        assert np.array_equal(exported, np.asarray(Image.open(row["mask"]))), row["file"]
    # `tlkit serve`'s answers, from the checkpoint and from the export folder: the same mask PNG and class shares.
    for served in (load_served_model(last, None), load_served_model(None, tmp_path / "exported")):
        files = [(tmp_path / row["file"]).read_bytes() for row in rows]
        answers = served.predict([served.decode(data, "file") for data in files])
        for row, answer in zip(rows, answers):
            mask = Image.open(io.BytesIO(base64.b64decode(answer["mask_png"])))
            assert mask.mode == "P" and np.array_equal(np.asarray(mask), np.asarray(Image.open(row["mask"])))
            shares = " ".join(f"{name}:{share:.4f}" for name, share in answer["classes"].items())
            assert shares == row["classes"], row["file"]


def test_feature_extraction_trains_the_decoder_on_a_frozen_backbone(tmp_path, caplog):
    model = FeatureExtraction("test_resnet", weights=None, num_classes=11, task=Segmentation())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    decoder = model.head.classifier.weight.detach().clone()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2)
    trainer.fit(model, scenes(tmp_path))
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert any("feature maps, which are not cached" in record.getMessage() for record in caplog.records)
    assert not torch.equal(decoder, model.head.classifier.weight)  # the decoder trained


def test_lora_adapters_train_a_segmenter_in_bf16_on_the_cpu(tmp_path):
    from tlkit.backbones import Adapter

    adapter = Adapter(rank=2, target_modules=["conv1", "conv2"])
    model = FineTuning("test_resnet", weights=None, num_classes=11, task=Segmentation(), adapter=adapter)
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("base_layer.weight")}
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, precision="bf16-mixed")
    trainer.fit(model, scenes(tmp_path))
    after = model.state_dict()
    assert before and any(not torch.equal(v, after[k]) for k, v in before.items())  # the adapters trained
    assert frozen and all(torch.equal(v, after[k]) for k, v in frozen.items())  # the pretrained weights did not
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
