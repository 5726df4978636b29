"""A frozen backbone's features: computed once (`compute_features`), kept (`FeatureCache` in memory or on disk, keyed
by fingerprints of weights, transform and data) and served in place of images while the backbone stays frozen
(`FeatureServing`)."""

from tlkit.features.cache import CacheMode, FeatureCache
from tlkit.features.extraction import channels_last, compute_features
from tlkit.features.fingerprint import data_fingerprint, label_bytes, tensors_fingerprint, weights_fingerprint
from tlkit.features.memory_store import MemoryStore
from tlkit.features.serving import FeatureServing, ServedFeatures

__all__ = [
    "CacheMode",
    "FeatureCache",
    "FeatureServing",
    "MemoryStore",
    "ServedFeatures",
    "channels_last",
    "compute_features",
    "data_fingerprint",
    "label_bytes",
    "tensors_fingerprint",
    "weights_fingerprint",
]
