"""Object detection: COCO instances files (their bad input in one line, images without boxes kept), augmentation
that moves the boxes, the FCOS detector learning, and runs through the `tlkit` command with the shipped config."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests._console import REPO, run_here
from tests._snippets import page_snippet
from tests.conftest import quiet_trainer
from tlkit.datamodules import CocoDataModule, DigitScenesDataModule
from tlkit.engines.served_models import load_served_model
from tlkit.errors import ConfigError
from tlkit.strategies import FeatureExtraction, FineTuning
from tlkit.tasks import Detection

CONFIG = str(REPO / "configs" / "digit_scenes_detection.yaml")
TINY = [
    "--model.init_args.backbone=test_resnet",
    "--model.init_args.weights=null",
    "--data.init_args.num_images=40",
    "--data.init_args.scene_size=64",
    "--data.init_args.batch_size=8",
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
]


def write_coco(root: Path, annotations: list[dict], images: int = 2, categories=(1, 2)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    listed = []
    for i in range(1, images + 1):
        Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(root / f"{i}.png")
        listed.append({"id": i, "file_name": f"{i}.png", "width": 40, "height": 30})
    coco = {
        "images": listed,
        "annotations": [{"id": k + 1, "iscrowd": 0, **a} for k, a in enumerate(annotations)],
        "categories": [{"id": c, "name": f"part{c}"} for c in categories],
    }
    (root / "instances.json").write_text(json.dumps(coco))
    return root


def scenes(tmp_path: Path, **kwargs) -> DigitScenesDataModule:
    return DigitScenesDataModule(
        targets="boxes", num_images=40, scene_size=64, root=str(tmp_path / "scenes"), batch_size=8, **kwargs
    )


# ------------------------------------------------------------------------------------------------------ the data
@pytest.mark.parametrize(
    "annotation, message",
    [
        (
            {"image_id": 1, "category_id": 1, "bbox": [30, 5, 20, 10]},
            r"box of annotation 1 .* inside its image \(40x30\)",
        ),
        ({"image_id": 1, "category_id": 1, "bbox": [3, 5, 0, 10]}, r"positive area .* \[3.0, 5.0, 0.0, 10.0\]"),
        ({"image_id": 9, "category_id": 1, "bbox": [3, 5, 4, 4]}, r"annotation 1 .* to name an image .* image_id 9"),
        ({"image_id": 1, "category_id": 7, "bbox": [3, 5, 4, 4]}, r"to name a category of the file \(1, 2\).* 7"),
    ],
)
def test_bad_annotations_are_one_line_naming_the_annotation_before_training(tmp_path, annotation, message):
    root = write_coco(tmp_path / "data", [annotation])
    with pytest.raises(ConfigError, match=message) as caught:
        CocoDataModule(root=str(root)).setup("fit")
    assert "\n" not in str(caught.value)


def test_a_missing_image_file_is_one_line_and_images_without_boxes_are_background(tmp_path, caplog):
    root = write_coco(tmp_path / "data", [{"image_id": 1, "category_id": 2, "bbox": [3, 5, 10, 8]}], images=10)
    dm = CocoDataModule(root=str(root), val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert dm.class_names() == ["part1", "part2"]
    assert "train 10 (9 without boxes) images; val and test held out of train; images without boxes" in caplog.text
    everything = [t for s in dm.splits.values() for t in s.labels]
    assert sorted(len(t["labels"]) for t in everything) == [0] * 9 + [1]
    boxed = [t for t in everything if t["labels"]][0]
    assert boxed["boxes"] == [[3.0, 5.0, 13.0, 13.0]] and boxed["labels"] == [1]  # x, y, w, h to x1, y1, x2, y2
    (root / "2.png").unlink()
    with pytest.raises(ConfigError, match=r"image '2.png' that .* names, but .* is missing"):
        CocoDataModule(root=str(root)).setup("fit")


def test_augmentation_moves_the_boxes_with_the_image(tmp_path):
    root = tmp_path / "squares"
    root.mkdir()
    listed, annotations = [], []
    for i in range(1, 9):
        pixels = np.zeros((48, 48, 3), dtype=np.uint8)
        x, y = 4 * i, 40 - 4 * i
        pixels[y : y + 12, x : x + 12, 0] = 255
        Image.fromarray(pixels).save(root / f"{i}.png")
        listed.append({"id": i, "file_name": f"{i}.png", "width": 48, "height": 48})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [x, y, 12, 12]})
    coco = {"images": listed, "annotations": annotations, "categories": [{"id": 1, "name": "square"}]}
    (root / "instances.json").write_text(json.dumps(coco))
    dm = CocoDataModule(root=str(root), image_size=32, min_crop_scale=0.6, hflip=True, val_fraction=0.2)
    dm.setup("fit")
    dataset = dm.dataset("train")
    kept = 0
    for index in range(len(dataset)):
        image, target = dataset[index]
        kept += len(target["boxes"])
        for box in target["boxes"]:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
            inside = image[0, y1:y2, x1:x2] > image[2, y1:y2, x1:x2]  # red above blue: the square
            assert inside.float().mean() > 0.7, (index, box)
    assert kept >= len(dataset) - 1  # a crop drops a square only where it cuts it away


# ------------------------------------------------------------------------------------------------------- learning
def test_the_detector_learns_the_boxes_of_a_batch_and_feature_extraction_keeps_the_backbone(tmp_path):
    data = scenes(tmp_path, augment=False)
    data.setup("fit")
    images, targets = next(iter(data.train_dataloader()))
    model = FineTuning("test_resnet", weights=None, num_classes=10, task=Detection())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0]  # focal, GIoU and centerness losses fall on the batch it sees
    frozen = FeatureExtraction("test_resnet", weights=None, num_classes=10, task=Detection())
    before = {k: v.clone() for k, v in frozen.backbone.state_dict().items()}
    head = frozen.head.fcos.head.classification_head.cls_logits.weight.detach().clone()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2)
    trainer.fit(frozen, scenes(tmp_path))
    assert all(torch.equal(before[k], v) for k, v in frozen.backbone.state_dict().items())
    assert not torch.equal(head, frozen.head.fcos.head.classification_head.cls_logits.weight)
    assert {"val/map", "val/map_50"} <= set(trainer.callback_metrics)


# -------------------------------------------------------------------------------------------------------- runs
def test_the_shipped_config_fits_tests_predicts_and_exports_boxes_drawn_and_coco_results(tmp_path, capsys):
    run_here(["fit", "--config", CONFIG, *TINY], tmp_path)
    run = tmp_path / "logs" / "digit_scenes_detection" / "version_0"
    assert any("val_map" in p.name for p in (run / "checkpoints").glob("epoch*"))  # selected on mAP
    last = str(run / "checkpoints" / "last.ckpt")
    run_here(["test", "--ckpt_path", last, "--trainer.enable_progress_bar=false"], tmp_path)
    assert "test/map_50" in capsys.readouterr().out
    run_here(["predict", "--ckpt_path", last, "--trainer.enable_progress_bar=false"], tmp_path)
    rows = list(csv.DictReader((run / "predictions" / "predictions-last.csv").open()))
    records = [json.loads(line) for line in (run / "predictions" / "predictions-last.jsonl").read_text().splitlines()]
    dm = scenes(tmp_path)
    dm.setup("test")
    assert len(rows) == len(records) == len(dm.splits["test"].samples)
    results = json.loads((run / "predictions" / "detections.json").read_text())
    assert len(results) == sum(len(r["detections"]) for r in records) > 0
    assert set(results[0]) == {"image_id", "file_name", "category_id", "bbox", "score"}
    for record in records:
        image = Image.open(tmp_path / record["file"])
        assert Image.open(record["drawn"]).size == image.size
        for detection in record["detections"]:
            x, y, w, h = detection["box"]
            assert -0.5 <= x and -0.5 <= y and x + w <= image.width + 0.5 and y + h <= image.height + 0.5
            assert detection["class"] in dm.class_names() and 0 < detection["score"] <= 1
    # The ONNX export, decoded by the export page's snippet (numpy and onnxruntime alone), finds the same boxes.
    run_here(["export", "--ckpt_path", last, "--out_dir", str(tmp_path / "exported")], tmp_path)
    spec = json.loads((tmp_path / "exported" / "model.json").read_text())
    assert spec["output"] == {"name": "locations", "shape": ["batch", "locations", 14]}
    (tmp_path / "snippet.py").write_text(page_snippet("export.md", "detection-snippet"))
    images = tmp_path / Path(records[0]["file"]).parent
    printed = subprocess.run(
        [sys.executable, "snippet.py", "exported", str(images)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported = [(line.split()[0], line.split()[1], float(line.split()[2])) for line in printed.splitlines()]
    written = [(Path(r["file"]).name, d["class"], d["score"]) for r in records for d in r["detections"]]
    unmatched = list(exported)
    for name, label, score in written:  # each of predict's detections, found among the snippet's
        match = next((e for e in unmatched if e[:2] == (name, label) and abs(e[2] - score) < 2e-4), None)
        if match is not None:
            unmatched.remove(match)
    # Equal but for a rare overlap within float precision of the NMS threshold, decided the other way.
    assert (
        written and len(unmatched) <= 0.02 * len(written) and abs(len(exported) - len(written)) <= 0.02 * len(written)
    )
    # `tlkit serve` answers with predict's detections (the image's pixels, the file's category ids); an export
    # folder, whose boxes need their caller's NMS, is refused in one line that says to serve the checkpoint.
    served = load_served_model(last, None)
    answers = served.predict([served.decode((tmp_path / r["file"]).read_bytes(), "file") for r in records])
    assert [answer["detections"] for answer in answers] == [record["detections"] for record in records]
    with pytest.raises(ConfigError, match="serve its checkpoint with --ckpt_path instead"):
        load_served_model(None, tmp_path / "exported")


def test_coco_masks_draw_what_the_mask_files_hold_and_a_box_only_annotation_is_one_line(tmp_path):
    from tlkit.datamodules.segmentation import read_mask

    scenes(tmp_path).setup("fit")  # renders the scenes: masks as files and as RLE in instances.json
    folder = next((tmp_path / "scenes").iterdir())
    coco = CocoDataModule(root=str(folder), targets="masks")
    coco.setup("fit")
    assert coco.class_names() == ["background", *(str(d) for d in range(10))]
    for image, target in zip(coco.splits["test"].samples, coco.splits["test"].labels):
        drawn, written = read_mask(target), read_mask(image.replace("/images/", "/masks/"))
        labelled = written != 255  # the files mark anti-aliased edges unlabelled; COCO has no such value
        assert np.array_equal(drawn[labelled], written[labelled])
    root = write_coco(tmp_path / "boxes_only", [{"image_id": 1, "category_id": 1, "bbox": [3, 5, 4, 4]}])
    with pytest.raises(
        ConfigError, match=r"every annotation of image .* to have a `segmentation` for `targets: masks`"
    ):
        CocoDataModule(root=str(root), targets="masks").setup("fit")


def test_lora_adapters_and_gradual_unfreezing_train_a_detector_in_bf16_on_the_cpu(tmp_path):
    from tlkit.backbones import Adapter
    from tlkit.callbacks import LRWarmup, ProgressiveUnfreezing

    adapter = Adapter(rank=2, target_modules=["conv1", "conv2"])
    model = FineTuning("test_resnet", weights=None, num_classes=10, task=Detection(), adapter=adapter)
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    callbacks = [ProgressiveUnfreezing(every_n_epochs=1), LRWarmup(duration=2)]
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=2, precision="bf16-mixed", callbacks=callbacks)
    trainer.fit(model, scenes(tmp_path))
    after = model.state_dict()
    assert before and any(not torch.equal(v, after[k]) for k, v in before.items())  # the adapters trained
    assert model.backbone.trainable_group_names  # unfrozen on schedule
    assert torch.isfinite(trainer.callback_metrics["val/loss"]) and "val/map" in trainer.callback_metrics


def write_user_coco(root: Path, images: int = 24) -> dict:
    """A COCO file as an annotation tool writes one: category ids 7, 23 and 42 (not 1, 2, 3), image ids from 1001,
    one coloured square an image, one box ending 0.4 px past its image's edge (float rounding in the export)."""
    root.mkdir(parents=True, exist_ok=True)
    colours = {7: (255, 0, 0), 23: (0, 255, 0), 42: (0, 0, 255)}
    listed, annotations = [], []
    for i in range(images):
        category = list(colours)[i % 3]
        pixels = np.zeros((48, 48, 3), dtype=np.uint8)
        x, y = 4 + (i * 5) % 20, 6 + (i * 7) % 18
        pixels[y : y + 16, x : x + 16] = colours[category]
        Image.fromarray(pixels).save(root / f"img{i}.png")
        listed.append({"id": 1001 + i, "file_name": f"img{i}.png", "width": 48, "height": 48})
        box = [x, y, 16, 16] if i else [x, y, 48.4 - x, 16]
        annotations.append(
            {"id": i + 1, "image_id": 1001 + i, "category_id": category, "bbox": box, "area": 256, "iscrowd": 0}
        )
    categories = [{"id": c, "name": name} for c, name in zip(colours, ("red", "green", "blue"))]
    coco = {"images": listed, "annotations": annotations, "categories": categories}
    (root / "instances.json").write_text(json.dumps(coco))
    return coco


def test_predictions_keep_the_users_category_and_image_ids_and_show_only_confident_boxes(tmp_path, caplog):
    """detections.json evaluates against the user's own file with pycocotools: its category ids (7, 23, 42) and image
    ids, recorded in the checkpoint and model.json; the CSV lists only detections at the display threshold, the JSONL
    file all of them."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco = write_user_coco(tmp_path / "parts")
    fit = [
        "fit",
        "--model=FineTuning",
        "--model.backbone=test_resnet",
        "--model.weights=null",
        "--model.task=Detection",
    ]
    fit += ["--data=CocoDataModule", f"--data.root={tmp_path / 'parts'}", "--data.image_size=32", "--data.batch_size=8"]
    fit += ["--data.test_fraction=0.25", "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"]
    run_here(fit, tmp_path)
    assert "clipped 1 box(es) ending within 1 pixel past their image's edge" in caplog.text
    assert "val and test held out of train" in caplog.text  # the summary says where they come from
    last = tmp_path / "logs" / "tlkit" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["tlkit"]["class_ids"] == [7, 23, 42]
    run_here(["predict", "--ckpt_path", str(last), "--trainer.enable_progress_bar=false"], tmp_path)
    predictions = last.parent.parent / "predictions"
    results = json.loads((predictions / "detections.json").read_text())
    assert results and {r["category_id"] for r in results} <= {7, 23, 42}
    ids_of = {image["file_name"]: image["id"] for image in coco["images"]}
    assert all(r["image_id"] == ids_of[Path(r["file_name"]).name] for r in results)
    truth = COCO(str(tmp_path / "parts" / "instances.json"))
    detections = truth.loadRes([{k: v for k, v in r.items() if k != "file_name"} for r in results])
    evaluation = COCOeval(truth, detections, iouType="bbox")
    evaluation.params.imgIds = sorted({r["image_id"] for r in results})
    evaluation.evaluate()  # pycocotools refuses ids the file does not have
    records = [json.loads(line) for line in next(predictions.glob("*.jsonl")).read_text().splitlines()]
    rows = list(csv.DictReader(next(predictions.glob("*.csv")).open()))
    listed = [cell for row in rows for cell in row["detections (score >= 0.3)"].split()]
    scores = [d["score"] for r in records for d in r["detections"]]
    assert len(listed) == sum(s >= 0.3 for s in scores) < len(scores)  # the low-scored ones only in the JSONL
    run_here(["export", "--ckpt_path", str(last), "--out_dir", str(tmp_path / "exported")], tmp_path)
    assert json.loads((tmp_path / "exported" / "model.json").read_text())["class_ids"] == [7, 23, 42]
