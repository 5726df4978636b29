"""ProgressiveUnfreezing serves cached backbone features while only the head trains, and images once the backbone
does: the result equals the uncached run's, also when resumed across the switch."""

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.callbacks._helpers import max_difference, trainer
from tlkit.callbacks import ProgressiveUnfreezing
from tlkit.datamodules import DigitsDataModule
from tlkit.features import FeatureCache
from tlkit.strategies import FineTuning

HEAD_EPOCHS, EPOCHS = 2, 4


def data() -> DigitsDataModule:
    return DigitsDataModule(image_size=32, batch_size=32, labels_per_class=10, augment=False, seed=0)


def model() -> FineTuning:
    L.seed_everything(0, verbose=False)
    return FineTuning("test_resnet", weights=None, num_classes=10, lr_decay=0.5)


def lp_ft(tmp_path, cache_features: str, ckpt_path=None, extra_callbacks=()):
    FeatureCache.memory.clear()
    unfreezing = ProgressiveUnfreezing(milestones={HEAD_EPOCHS: "all"}, cache_features=cache_features)
    fitted = model()
    run = trainer(tmp_path, [unfreezing, *extra_callbacks], max_epochs=EPOCHS, num_sanity_val_steps=2)
    run.fit(fitted, datamodule=data(), ckpt_path=ckpt_path)
    return fitted, unfreezing


def test_head_only_phase_trains_on_cached_features_then_on_images(tmp_path):
    initial = {k: v.clone() for k, v in model().backbone.state_dict().items()}
    cached, cached_unfreezing = lp_ft(tmp_path / "cached", "memory")
    uncached, uncached_unfreezing = lp_ft(tmp_path / "uncached", "off")
    assert cached_unfreezing.feature_cache.computed == 2  # train and val features, once for both head-only epochs
    assert uncached_unfreezing.feature_cache is None
    # After the switch the backbone trained on images: it moved, and exactly as in the uncached run.
    assert max_difference(initial, cached.backbone.state_dict()) > 1e-3
    assert max_difference(cached.state_dict(), uncached.state_dict()) < 1e-4


@pytest.mark.parametrize("epoch", [0, HEAD_EPOCHS - 1, HEAD_EPOCHS])
def test_resume_across_the_switch_matches_the_uninterrupted_run(tmp_path, epoch):
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    reference, _ = lp_ft(tmp_path / "full", "memory", extra_callbacks=[every_epoch])
    resumed, unfreezing = lp_ft(tmp_path / "resumed", "memory", ckpt_path=tmp_path / "ckpt" / f"epoch={epoch}.ckpt")
    assert max_difference(reference.state_dict(), resumed.state_dict()) < 1e-4
    # Resumed into fine-tuning it never needs the backbone's features.
    assert unfreezing.feature_cache.computed == (0 if epoch >= HEAD_EPOCHS else 2)


def test_augmented_training_images_are_never_cached(tmp_path):
    FeatureCache.memory.clear()
    unfreezing = ProgressiveUnfreezing(milestones={1: "all"})
    fitted = model()
    augmented = DigitsDataModule(image_size=32, batch_size=32, labels_per_class=10, augment=True, seed=0)
    trainer(tmp_path, [unfreezing], max_epochs=2).fit(fitted, datamodule=augmented)
    assert unfreezing.feature_cache.computed == 1  # validation only


def test_bad_cache_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="cache_features.*'memory', 'disk' or 'off'"):
        ProgressiveUnfreezing(every_n_epochs=1, cache_features="ram")
