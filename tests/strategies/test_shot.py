"""SHOT: source-free adaptation from a tlkit checkpoint; no source image is ever served, the classifier stays the
source's, and a resumed run (mid-epoch, with the epoch's pseudo-labels) ends bitwise identical."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from tests.callbacks._helpers import max_difference
from tests.conftest import quiet_trainer
from tests.strategies._helpers import seeded_fit
from tlkit.checkpoint import info_of, write_info
from tlkit.datamodules import DigitsMDataModule
from tlkit.errors import ConfigError
from tlkit.strategies import SHOT, SourceOnly


class RecordingDigitsM(DigitsMDataModule):
    """DigitsM that records every sample it opens, to prove which domain was read."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.opened: set[int] = set()

    def load_image(self, sample):
        self.opened.add(id(sample))
        return super().load_image(sample)


class RecordBatches(Callback):
    def __init__(self) -> None:
        self.keys: list[tuple[str, ...]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.keys.append(tuple(sorted(batch)))


def data(**kwargs) -> DigitsMDataModule:
    return RecordingDigitsM(image_size=32, batch_size=8, iters_per_epoch=3, **kwargs)


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory) -> str:
    L.seed_everything(0, verbose=False)
    model = SourceOnly("test_efficientnet", weights=None)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=1)
    trainer.fit(model, datamodule=data())
    path = tmp_path_factory.mktemp("source") / "source.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def test_shot_adapts_without_any_source_image_and_keeps_the_source_classifier(source_checkpoint):
    source = torch.load(source_checkpoint, weights_only=True)["state_dict"]
    model = SHOT("test_efficientnet", source_checkpoint=source_checkpoint)
    dm, batches = data(), RecordBatches()
    quiet_trainer(max_epochs=2, limit_val_batches=2, callbacks=[batches]).fit(model, datamodule=dm)
    source_samples = {id(s) for split in ("source_train", "source_val") for s in dm.splits[split].samples}
    assert dm.opened and not dm.opened & source_samples  # not one source image was read
    assert set(batches.keys) == {("target",)} and len(batches.keys) == 6
    assert list(dm.domain_val_dataloaders()) == ["target"]
    state = model.state_dict()
    assert all(torch.equal(state[k], source[k]) for k in source if k.startswith("head."))
    changed = [k for k in source if k.startswith("backbone.") and not torch.equal(state[k], source[k])]
    assert len(changed) > 10  # the backbone adapted (weights and BatchNorm statistics)
    assert model.pseudo_labels.shape == (len(dm.splits["target_train"].labels),)
    assert {"train/im_loss", "train/pseudo_label_loss", "train/pseudo_label_agreement", "val/im"} <= set(
        model.trainer.callback_metrics
    )


def test_shot_resumes_mid_epoch_bitwise_with_that_epochs_pseudo_labels(source_checkpoint, tmp_path):
    def run(root, ckpt_path=None, extra=()):
        make = lambda: SHOT("test_efficientnet", source_checkpoint=source_checkpoint)  # noqa: E731
        return seeded_fit(make, data(), root, ckpt_path, extra)

    # Step 4 is the second step of epoch 1: the labels of epoch 1's start are in the checkpoint, and the model has
    # moved since, so labelling again on resume would give other labels and other weights.
    mid_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=4, save_top_k=-1)
    reference = run(tmp_path / "a", extra=[mid_epoch])
    saved = torch.load(tmp_path / "ckpt" / "step=4.ckpt", weights_only=True)
    assert saved["shot_pseudo_labels"]["epoch"] == 1
    resumed = run(tmp_path / "b", ckpt_path=tmp_path / "ckpt" / "step=4.ckpt")
    assert max_difference(reference.state_dict(), resumed.state_dict()) == 0.0
    assert torch.equal(reference.pseudo_labels, resumed.pseudo_labels)


def test_shot_resumes_without_the_source_file(source_checkpoint, tmp_path):
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    model = SHOT("test_efficientnet", source_checkpoint=source_checkpoint)
    first = quiet_trainer(
        max_epochs=2, limit_val_batches=1, callbacks=[every_epoch], default_root_dir=tmp_path, enable_checkpointing=True
    )
    first.fit(model, datamodule=data())
    model = SHOT("test_efficientnet", source_checkpoint=str(tmp_path / "moved_away.ckpt"))
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=1)
    trainer.fit(model, datamodule=data(), ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt")
    assert trainer.global_step == 6


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda ckpt: SHOT("test_efficientnet", source_checkpoint="nowhere.ckpt"), r"source_checkpoint.*no such file"),
        (lambda ckpt: SHOT("test_resnet", source_checkpoint=ckpt), r"backbone` to be 'test_efficientnet' as in"),
        (lambda ckpt: SHOT("test_efficientnet", source_checkpoint=ckpt, head="mlp"), r"`model.head`"),
        (lambda ckpt: SHOT("test_efficientnet", source_checkpoint=ckpt, pseudo_label_weight=-1), r"pseudo_label_"),
    ],
)
def test_bad_source_models_are_refused_before_training(make, match, source_checkpoint):
    with pytest.raises(ConfigError, match=match):
        quiet_trainer(fast_dev_run=True).fit(make(source_checkpoint), datamodule=data())


def test_shot_refuses_source_classes_in_another_order(source_checkpoint, tmp_path):
    checkpoint = torch.load(source_checkpoint, weights_only=True)
    info = info_of(checkpoint)
    write_info(checkpoint, dataclasses.replace(info, class_names=tuple(reversed(info.class_names))))
    torch.save(checkpoint, tmp_path / "reordered.ckpt")
    model = SHOT("test_efficientnet", source_checkpoint=str(tmp_path / "reordered.ckpt"))
    reordered = r"the data's classes` to be the 10 classes of the source checkpoint .*\(10 classes: 9, 8, 7"
    with pytest.raises(ConfigError, match=reordered):
        quiet_trainer(fast_dev_run=True).fit(model, datamodule=data())


@pytest.mark.parametrize("source_strategy", ["FineTuning", "DANN"])
def test_shot_starts_from_any_full_tlkit_checkpoint(source_strategy, tmp_path):
    from tlkit import strategies
    from tlkit.datamodules import DigitsDataModule

    L.seed_everything(0, verbose=False)
    source = getattr(strategies, source_strategy)("test_efficientnet", weights=None)
    data = DigitsDataModule(image_size=32, batch_size=8) if source_strategy == "FineTuning" else data_for_dann()
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1)
    trainer.fit(source, datamodule=data)
    trainer.save_checkpoint(tmp_path / "source.ckpt")
    model = SHOT("test_efficientnet", source_checkpoint=str(tmp_path / "source.ckpt"), num_classes=10)
    model.load_source_model()
    expected = {k: v for k, v in source.state_dict().items() if k.startswith(("backbone.", "head."))}
    assert max_difference(expected, {k: model.state_dict()[k] for k in expected}) == 0.0


def data_for_dann() -> DigitsMDataModule:
    return DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=2)


def test_an_adapted_shot_checkpoint_loads_for_export_without_the_source_file(source_checkpoint, tmp_path):
    from tlkit.engines.export import load_strategy

    model = SHOT("test_efficientnet", source_checkpoint=source_checkpoint)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=1)
    trainer.fit(model, datamodule=data())
    trainer.save_checkpoint(tmp_path / "shot.ckpt")
    checkpoint = torch.load(tmp_path / "shot.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["source_checkpoint"] = str(tmp_path / "gone.ckpt")  # moved away since
    torch.save(checkpoint, tmp_path / "shot.ckpt")
    loaded = load_strategy(tmp_path / "shot.ckpt")
    assert isinstance(loaded, SHOT)
    assert max_difference(model.state_dict(), loaded.state_dict()) == 0.0
