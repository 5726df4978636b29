"""Explanations (`tlkit.functional.attribution`, Captum): the maps point at what drives the class, and ``tlkit
predict --explain`` writes them beside the predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests._console import TINY_IMAGE_MODEL, run_here, run_here_captured, shipped
from tlkit.backbones import Backbone, DataConfig
from tlkit.errors import ConfigError
from tlkit.functional.attribution import activation_maps, check_explainable, explained_targets, mass_inside
from tlkit.strategies import FineTuning


def brightness_classifier() -> FineTuning:
    """A CNN whose class 1 is "something bright" and class 0 its opposite: its evidence for class 1 is exactly where
    the image is bright, which a faithful map must show."""
    convs = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
    with torch.no_grad():
        for conv in (convs[0], convs[2]):
            conv.weight.fill_(1.0 / conv.weight[0].numel())
            conv.bias.zero_()
    backbone = Backbone(model=convs, num_features=4, data_config=DataConfig(image_size=32))
    model = FineTuning(backbone=backbone, num_classes=2, dropout=0.0).eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
        model.head.bias.zero_()
    return model


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_the_map_puts_the_evidence_where_the_class_is(method):
    model = brightness_classifier()
    images, masks = torch.zeros(3, 3, 32, 32), torch.zeros(3, 32, 32, dtype=torch.bool)
    for i, (top, left) in enumerate([(2, 18), (18, 4), (12, 22)]):  # a square elsewhere in each, off the diagonal
        images[i, :, top : top + 10, left : left + 10] = 1.0
        masks[i, top : top + 10, left : left + 10] = True
    with torch.inference_mode():  # as `tlkit predict` runs: its images and predictions are inference tensors
        targets = explained_targets(model, images)
        maps = activation_maps(model, images, targets, method)
    assert targets.tolist() == [1, 1, 1]
    assert maps.shape == (3, 32, 32) and float(maps.min()) >= 0 and float(maps.max()) == pytest.approx(1.0)
    inside = mass_inside(maps, masks)
    # The evidence is on each image's own square (a tenth of the image; occlusion's windows blur its edges)...
    assert bool((inside > 0.7).all()), inside
    assert bool((mass_inside(maps, masks.transpose(1, 2)) < 0.1).all())  # ...not mirrored across the diagonal


def test_what_cannot_be_explained_is_refused_in_one_line():
    model = brightness_classifier()
    with pytest.raises(ConfigError, match="Expected `explain` to be a method of explanation, but got 'lime'"):
        check_explainable(model, "lime")
    from tlkit.tasks import Regression

    regression = FineTuning("test_resnet", weights=None, num_classes=2, task=Regression())
    with pytest.raises(ConfigError, match="used with a classifier or a multi-label model, but got 'a regression"):
        check_explainable(regression, "gradcam")


SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]


def test_predict_explain_writes_each_images_map_beside_its_row(tmp_path, capfd):
    run_here([*shipped("digits_finetune.yaml", *TINY_IMAGE_MODEL), *SHORT], tmp_path)
    run = tmp_path / "logs" / "digits_finetune" / "version_0"
    last = str(run / "checkpoints" / "last.ckpt")
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate([(200, 30, 30), (20, 20, 20), (240, 240, 240)]):
        picture = Image.new("RGB", (50, 40), colour)
        picture.paste((255, 255, 0), (10 + 10 * i, 8, 24 + 10 * i, 30))
        picture.save(images / f"photo{i}.png")
    predict = ["predict", "--ckpt_path", last, f"--data.predict_dir={images}", "--explain", "gradcam"]
    assert run_here_captured(predict, tmp_path, capfd).returncode == 0
    rows = [json.loads(line) for line in (run / "predictions" / "predictions-last.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        why = row["explanation"]
        assert why["method"] == "gradcam" and why["class"] == row["prediction"]
        activation_map = np.asarray(Image.open(why["map"]))
        assert activation_map.shape == (32, 32) and activation_map.max() == 255  # the model's input, scaled to 255
        assert Image.open(why["overlay"]).size == (32, 32) and Image.open(why["overlay"]).mode == "RGB"
    header = (run / "predictions" / "predictions-last.csv").read_text().splitlines()[0]
    assert header.endswith(",explained,explanation")
    # A method that does not exist, and a model whose outputs are not classes: one line before predicting.
    done = run_here_captured([*predict[:-1], "lime"], tmp_path, capfd)
    assert done.returncode == 2 and "explain" in done.stderr and "lime" in done.stderr
    assert "Traceback" not in done.stderr and not (run / "predictions" / "predictions-last-1.jsonl").exists()


def test_a_multi_label_model_is_explained_by_occlusion_for_its_most_probable_label(tmp_path, capfd):
    fit = shipped("multidigits_multilabel.yaml", *TINY_IMAGE_MODEL, "--trainer.deterministic=false")
    run_here([*fit, *SHORT], tmp_path)
    run = tmp_path / "logs" / "multidigits_multilabel" / "version_0"
    predict = ["predict", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--explain", "occlusion"]
    done = run_here_captured([*predict, "--trainer.limit_predict_batches=1"], tmp_path, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "predictions" / "predictions-last.jsonl").read_text().splitlines()]
    assert rows and all(row["explanation"]["method"] == "occlusion" for row in rows)
    for row in rows:  # the label explained is the most probable one, chosen or not at its threshold
        probabilities = row["probabilities"]
        assert row["explanation"]["class"] == max(probabilities, key=probabilities.get)
        assert np.asarray(Image.open(row["explanation"]["map"])).max() in (0, 255)
