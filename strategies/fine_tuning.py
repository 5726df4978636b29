"""`FineTuning`: train the head and the top backbone groups with discriminative learning rates."""

from __future__ import annotations

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.strategies.transfer_module import TransferModule


class FineTuning(TransferModule):
    """Fine-tune the top ``trainable_groups`` backbone layer groups together with the head.

    The group ``k`` places below the head trains at ``lr * lr_decay**k`` (ULMFiT's discriminative learning rates),
    written into the param group's real ``lr`` so any torch or Lightning scheduler applies it.

    Args:
        trainable_groups: how many backbone layer groups, counted from the top, train; ``null`` means all.
        lr_decay: learning-rate factor per group below the head, in (0, 1]; 1 trains every group at ``lr``.
        freeze_bn: keep every BatchNorm's running statistics fixed (advisable with small batches).

    The other arguments are `TransferModule`'s.

    Example:
        >>> model = FineTuning("resnet18", weights=None, num_classes=10, trainable_groups=2, lr_decay=0.5)
        >>> model.backbone.trainable_group_names
        ['layer3', 'layer4']
    """

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        *,
        trainable_groups: int | None = None,
        lr_decay: float = 0.75,
        freeze_bn: bool = False,
        **kwargs,
    ) -> None:
        if not 0.0 < lr_decay <= 1.0:
            raise config_error("lr_decay", "in (0, 1]", lr_decay)
        self.trainable_groups = trainable_groups
        self.lr_decay = lr_decay
        self.freeze_bn = freeze_bn  # read by ProgressiveUnfreezing when it unfreezes groups
        super().__init__(backbone, **kwargs)

    def configure_backbone(self) -> None:
        n = len(self.backbone.layer_groups)
        k = n if self.trainable_groups is None else self.trainable_groups
        if not 0 <= k <= n:
            raise config_error(
                "trainable_groups", f"in [0, {n}] for backbone {self.backbone.name!r}", self.trainable_groups
            )
        self.backbone.freeze(list(range(n - k)), bn_eval=True)
        self.backbone.unfreeze(list(range(n - k, n)), bn_eval=self.freeze_bn)

    def lr_scale(self, depth: int) -> float:
        return self.lr_decay**depth
