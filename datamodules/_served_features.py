"""`FeatureServingSlot`: where a frozen backbone's `FeatureServing` is handed to a datamodule (`ServesFeatures`)."""

from __future__ import annotations

from tlkit.features import FeatureServing


class FeatureServingSlot:
    """Datamodule mixin: serve cached backbone features in place of inputs while a serving is handed in.

    Each ``setup`` starts with none, serving inputs: Lightning calls the datamodule's setup before the callbacks'
    and the model's, where `FeatureExtraction` and `ProgressiveUnfreezing` hand theirs in, and builds the loaders
    after all three. A datamodule reused for another run so never serves the previous model's features.
    """

    _feature_serving: FeatureServing | None = None

    def serve_features(self, serving: FeatureServing | None) -> None:
        """Serve ``serving``'s features for every split whose transform is deterministic (None: inputs only)."""
        self._feature_serving = serving

    @property
    def feature_serving(self) -> FeatureServing | None:
        """The serving handed in since the last setup, if any."""
        return self._feature_serving

    def setup(self, stage: str | None = None) -> None:
        self._feature_serving = None
        super().setup(stage)
