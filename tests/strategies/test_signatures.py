"""Each strategy and datamodule declares only its own arguments and forwards the rest: the CLI still lists and
documents every inherited argument (jsonargparse follows ``**kwargs`` into the base classes)."""

import pytest

from tlkit.cli import TLKitCLI
from tlkit.errors import concrete_classes

INHERITED_MODEL = {
    "weights": "null`` for random init",
    "num_classes": "taken from the datamodule",
    "head": "or ``mlp``",
    "dropout": "dropout before the head",
    "label_smoothing": "label smoothing",
    "optimizer": "optimizer factory",
    "lr_scheduler": "scheduler factory",
}
DOMAIN_MODULE = {"backbone_lr_factor"}
# Strategies whose weights come from elsewhere (SHOT: the source checkpoint), so `weights` would do nothing.
WEIGHTS_FROM_ELSEWHERE = {"SHOT"}
DOMAIN_ADAPTATION = {"trade_off"}
INHERITED_DATA = {
    "batch_size": "images per",
    "num_workers": "workers",
    "augment": "augmentation preset",
    "seed": "seed",
}
INHERITED_AUDIO_DATA = {
    "batch_size": "clips per batch",
    "num_workers": "workers",
    "augment": "crop long training clips",
    "gain_db": "volume change",
    "noise_snr_db": "white noise",
    "labels_per_class": "labelled training clips",
    "seed": "seed",
}
INHERITED_TEXT_DATA = {
    "batch_size": "texts per batch",
    "num_workers": "workers",
    "max_length": "tokens kept per text",
    "labels_per_class": "labelled training texts",
    "seed": "seed",
}


def help_text(capsys, key: str, name: str) -> str:
    with pytest.raises(SystemExit):
        TLKitCLI(args=["fit", f"--{key}.help={name}"])
    return " ".join(capsys.readouterr().out.split())  # undo the help's line wrapping


@pytest.mark.parametrize("name", [n for n in concrete_classes("tlkit.strategies") if n != "TransferModule"])
def test_every_strategy_documents_every_inherited_argument(name, capsys):
    text = help_text(capsys, "model", name)
    for argument, description in INHERITED_MODEL.items():
        if argument == "weights" and name in WEIGHTS_FROM_ELSEWHERE:
            assert "--model.weights " not in text, name
            continue
        assert f"--model.{argument} " in text and description in text, (name, argument)
    from tlkit import strategies

    cls = getattr(strategies, name)
    if issubclass(cls, strategies.DomainModule):
        assert all(f"--model.{argument} " in text for argument in DOMAIN_MODULE), name
    # Only the strategies with an adaptation loss have its weight: no argument that does nothing.
    adapts = issubclass(cls, strategies.DomainAdaptation)
    assert all((f"--model.{argument} " in text) == adapts for argument in DOMAIN_ADAPTATION), name


@pytest.mark.parametrize("name", [n for n in concrete_classes("tlkit.datamodules") if n.endswith("DataModule")])
def test_every_datamodule_documents_every_inherited_argument(name, capsys):
    from tlkit import datamodules

    text = help_text(capsys, "data", name)
    cls = getattr(datamodules, name)
    if issubclass(cls, datamodules.TextDataModule):
        inherited = INHERITED_TEXT_DATA
    elif issubclass(cls, datamodules.AudioDataModule):
        inherited = INHERITED_AUDIO_DATA
    else:
        inherited = INHERITED_DATA
    for argument, description in inherited.items():
        assert f"--data.{argument} " in text and description in text, (name, argument)
