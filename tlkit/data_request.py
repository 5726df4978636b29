"""`DataRequest`: what a model asks of the datamodule it is trained with, in one typed object.

The model side (`TransferModule.data_request`) fills it in; the data side (tlkit's datamodules, or a user's) reads
it through the trainer. Neither reaches into the other's attributes, so either can change behind it. The request is
plain data, decided by the model alone; a frozen backbone's cached features, which a callback may decide on too,
reach the datamodule through its own protocol (`tlkit.protocols.ServesFeatures`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch

from tlkit.input_config import InputConfig

if TYPE_CHECKING:
    from tlkit.backbones import Backbone

#: Domain adaptation: one augmented view of each target image, or a weakly and a strongly augmented one.
TargetViews = Literal["single", "weak_strong"]


class Features(NamedTuple):
    """Backbone features served in place of images (a sample's, or a batch's once collated).

    A distinct type rather than a shape convention, so a model never mistakes a batch of token ids or a small
    image for features. DataLoader collation and Lightning's device transfer keep the type.
    """

    values: torch.Tensor


@dataclass(frozen=True)
class DataRequest:
    """What a model asks of its datamodule.

    Attributes:
        input_config: what the backbone expects: image size, mean and std (`DataConfig`), a tokenizer and a maximum
            length (`TextConfig`), or a sample rate and a training crop (`AudioConfig`); None leaves the datamodule's
            own defaults.
        check_image_size: raises a `ConfigError` when the backbone cannot run on square images of a given side; a
            datamodule calls it once it knows its image size, before training.
        target_views: domain adaptation: how many augmented views of each target image a training batch carries.
        source_free: domain adaptation: serve no source images at all, in training or validation (the source-free
            setting: the source domain's data cannot be shared, only a model trained on it).
        target_indices: domain adaptation: each target training sample comes with its index in the target training
            pool, ``(views, index)``, so a strategy can look up labels it computed for the pool itself.

    Examples:
        >>> DataRequest(input_config=DataConfig(image_size=64), target_views="weak_strong")
    """

    input_config: InputConfig | None = None
    check_image_size: Callable[[int], None] | None = None
    target_views: TargetViews = "single"
    source_free: bool = False
    target_indices: bool = False

    @classmethod
    def for_backbone(cls, backbone: Backbone) -> DataRequest:
        """What ``backbone`` needs of the data: its input config and its image-size check."""
        check = None if backbone.reads_text or backbone.reads_audio else backbone.check_input_size
        return cls(input_config=backbone.data_config, check_image_size=check)
