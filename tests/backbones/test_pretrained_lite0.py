"""The bundled ImageNet EfficientNet-Lite0 weights must keep recognising real photos."""

import pytest
import timm
import torch
from PIL import Image
from skimage import data

from tlkit.backbones import Backbone, efficientnet_lite0_state_dict
from tlkit.datamodules.transforms import eval_transform

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def classifier():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    model.load_state_dict(efficientnet_lite0_state_dict(), strict=True)
    return model.eval()


@pytest.mark.parametrize(("photo", "expected"), [("chelsea", CATS), ("coffee", {ESPRESSO})])
def test_bundled_weights_recognise_photos(classifier, photo, expected):
    image = Image.fromarray(getattr(data, photo)()).convert("RGB")
    config = Backbone("tf_efficientnet_lite0", weights=None).data_config
    with torch.no_grad():
        predicted = classifier(eval_transform(config)(image)[None]).argmax(-1).item()
    assert predicted in expected


def test_imagenet_backbone_uses_bundled_weights_offline():
    backbone = Backbone("tf_efficientnet_lite0", weights="imagenet")
    bundled = efficientnet_lite0_state_dict()
    for name, tensor in backbone.model.state_dict().items():
        assert torch.equal(tensor, bundled[name]), name
