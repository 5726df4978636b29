"""FeatureExtraction trains its head on cached backbone features when transforms are deterministic."""

import logging

import torch

from tests.conftest import quiet_trainer
from tlkit.backbones import Backbone
from tlkit.datamodules import DigitsDataModule
from tlkit.features import FeatureCache, channels_last
from tlkit.strategies import FeatureExtraction


def probe(cache_features="memory", augment=False, cache_dir=".tlkit_cache", epochs=3, backbone=None):
    torch.manual_seed(0)
    model = FeatureExtraction(
        backbone or "test_resnet", weights=None, cache_features=cache_features, cache_dir=cache_dir
    )
    data = DigitsDataModule(image_size=32, batch_size=64, labels_per_class=20, augment=augment)
    quiet_trainer(max_epochs=epochs).fit(model, datamodule=data)
    return model


def test_cached_probe_matches_uncached_probe():
    FeatureCache.memory.clear()
    cached, uncached = probe("memory"), probe("off")
    assert cached.feature_cache.computed == 2  # train and val, once each for three epochs
    assert torch.allclose(cached.head.weight, uncached.head.weight, atol=1e-5)
    assert not torch.equal(cached.head.weight, probe("memory", epochs=1).head.weight)  # the head really trained


def test_cache_is_reused_and_invalidated_by_new_weights():
    FeatureCache.memory.clear()
    first = probe("memory")
    second = probe("memory")  # same weights (seeded init), data and transforms: nothing to compute
    assert first.feature_cache.computed == 2 and second.feature_cache.computed == 0
    torch.manual_seed(1)
    other = FeatureExtraction("test_resnet", weights=None, cache_features="memory")
    data = DigitsDataModule(image_size=32, batch_size=64, labels_per_class=20, augment=False)
    quiet_trainer(max_epochs=1).fit(other, datamodule=data)
    assert other.feature_cache.computed == 2  # other weights, other key


def test_disk_cache_survives_the_process_and_tracks_the_transform(tmp_path):
    FeatureCache.memory.clear()
    first = probe("disk", cache_dir=str(tmp_path))
    assert first.feature_cache.computed == 2 and len(list(tmp_path.glob("*.pt"))) == 2
    assert probe("disk", cache_dir=str(tmp_path)).feature_cache.computed == 0
    model = FeatureExtraction("test_resnet", weights=None, cache_features="disk", cache_dir=str(tmp_path))
    data = DigitsDataModule(image_size=40, batch_size=64, labels_per_class=20, augment=False)  # another transform
    torch.manual_seed(0)
    quiet_trainer(max_epochs=1).fit(model, datamodule=data)
    assert model.feature_cache.computed == 2


def test_random_augmentation_is_not_cached_and_says_so(caplog):
    FeatureCache.memory.clear()
    with caplog.at_level(logging.INFO):
        model = probe("memory", augment=True, epochs=1)
    assert model.feature_cache.computed == 1  # validation only
    assert "the train transform is random (augment: true), so train features are not cached" in caplog.text


def test_channels_last_pass_gives_the_same_features_and_restores_the_layout():
    backbone = Backbone("test_efficientnet", weights=None).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = backbone(x)
        with channels_last(backbone):
            stem = backbone.model.conv_stem.weight
            assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
            got = backbone(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)
    assert backbone.model.conv_stem.weight.is_contiguous()


def test_memory_store_evicts_least_recently_used_past_its_budget():
    from tlkit.features import MemoryStore

    entry = (torch.zeros(10, 4), torch.zeros(10, dtype=torch.long))  # 160 + 80 bytes
    store = MemoryStore(max_bytes=500)
    store.put("a", entry)
    store.put("b", entry)
    assert store.get("a") is entry  # "a" is now the most recently used
    store.put("c", entry)
    assert len(store) == 2 and store.get("b") is None and store.get("a") is entry and store.nbytes == 480
    store.put("big", (torch.zeros(1000), torch.zeros(1)))  # over budget alone: kept, everything else evicted
    assert len(store) == 1 and store.get("big") is not None
    store.clear()
    assert len(store) == 0
