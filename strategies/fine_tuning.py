"""`FineTuning`: train the head and the top backbone groups with discriminative learning rates, optionally through
peft adapters and with L2-SP or BSS regularization."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from tlkit.backbones import Adapter, Backbone
from tlkit.checkpoint import CheckpointInfo, info_of
from tlkit.errors import ConfigError, config_error
from tlkit.features import tensors_fingerprint
from tlkit.functional import batch_spectral_shrinkage, l2_penalty
from tlkit.strategies.regularization import BSS, L2SP, StartingPoint
from tlkit.strategies.transfer_module import TransferModule


class FineTuning(TransferModule):
    """Fine-tune the top ``trainable_groups`` backbone layer groups together with the head.

    The group ``k`` places below the head trains at ``lr * lr_decay**k`` (ULMFiT's discriminative learning rates),
    written into the param group's real ``lr`` so any torch or Lightning scheduler applies it.

    Args:
        trainable_groups: how many backbone layer groups, counted from the top, train; ``null`` means all.
        lr_decay: learning-rate factor per group below the head, in (0, 1]; 1 trains every group at ``lr``.
        freeze_bn: keep every BatchNorm's running statistics fixed (advisable with small batches).
        adapter: train peft adapters (LoRA, DoRA, LoHa, LoKr) on the backbone's layers instead of its weights; groups,
            learning rates and unfreezing then apply to each group's adapters.
        l2_sp: pull the backbone toward its starting weights (replaces weight decay).
        bss: shrink the smallest singular values of each batch's features.

    The other arguments are `TransferModule`'s.

    Examples:
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
        adapter: Adapter | None = None,
        l2_sp: L2SP | None = None,
        bss: BSS | None = None,
        **kwargs,
    ) -> None:
        if not 0.0 < lr_decay <= 1.0:
            raise config_error("lr_decay", "in (0, 1]", lr_decay)
        self.trainable_groups = trainable_groups
        self.lr_decay = lr_decay
        self.freeze_bn = freeze_bn  # read by ProgressiveUnfreezing when it unfreezes groups
        # Checkpoints hold these as plain dicts (readable with `weights_only=True`), which come back here on load.
        self.adapter = Adapter(**adapter) if isinstance(adapter, dict) else adapter
        self.l2_sp = L2SP(**l2_sp) if isinstance(l2_sp, dict) else l2_sp
        self.bss = BSS(**bss) if isinstance(bss, dict) else bss
        super().__init__(backbone, **kwargs)
        for name, value in (("adapter", self.adapter), ("l2_sp", self.l2_sp), ("bss", self.bss)):
            self.hparams[name] = dataclasses.asdict(value) if value is not None else None

    def configure_backbone(self) -> None:
        # (`weights` is read from the saved hyperparameters, not from **kwargs: jsonargparse reads this signature's
        # source, and a kwargs lookup here would hide the parent's argument from the CLI.)
        if self.adapter is not None and self.adapter.checkpoint == "adapter_only" and self.hparams.weights is None:
            raise config_error(
                "adapter.checkpoint",
                "'full' with `weights: null` (random pretrained weights cannot be rebuilt to load an adapter-only "
                "checkpoint)",
                "adapter_only",
            )
        if self.adapter is not None and self.backbone.adapter is None:
            self.backbone.add_adapter(self.adapter)
        n = len(self.backbone.layer_groups)
        k = n if self.trainable_groups is None else self.trainable_groups
        if not 0 <= k <= n:
            raise config_error(
                "trainable_groups", f"in [0, {n}] for backbone {self.backbone.name!r}", self.trainable_groups
            )
        self.backbone.freeze(list(range(n - k)), bn_eval=True)
        self.backbone.unfreeze(list(range(n - k, n)), bn_eval=self.freeze_bn)
        # L2-SP's starting point: every weight the backbone can train, as built (pretrained, or random with `null`).
        self.starting_point = StartingPoint(self._backbone_trainables()) if self.l2_sp is not None else None

    def _backbone_trainables(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for g in self.backbone.layer_groups for n, p in zip(g.parameter_names, g.parameters)]

    def lr_scale(self, depth: int) -> float:
        return self.lr_decay**depth

    # ------------------------------------------------------------------------------------------------ regularization
    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        if self.l2_sp is not None:  # L2-SP's two terms take weight decay's place
            for group in groups:
                group["weight_decay"] = 0.0
        return groups

    def regularization(self, features: torch.Tensor | list[torch.Tensor]) -> dict[str, torch.Tensor]:
        penalties = {}
        if not isinstance(features, torch.Tensor):  # a dense task's feature maps: BSS reads the last one, pooled
            features = features[-1].mean(dim=(2, 3))
        if self.l2_sp is not None:
            trainable = [(n, p) for n, p in self._backbone_trainables() if p.requires_grad]
            pull = self.starting_point.distance(trainable) if trainable else features.new_zeros(())
            head = l2_penalty(p for p in self.head.parameters() if p.requires_grad).to(features.device)
            penalties["l2_sp"] = self.l2_sp.alpha * pull + self.l2_sp.beta * head
        if self.bss is not None:
            penalties["bss"] = self.bss.weight * batch_spectral_shrinkage(features, self.bss.k)
        return penalties

    # ------------------------------------------------------------------------------------- adapter-only checkpoints
    def checkpoint_record(self, checkpoint: dict[str, Any]) -> CheckpointInfo:
        record = super().checkpoint_record(checkpoint)
        frozen = self._frozen_pretrained_keys()
        if not frozen:
            return record
        state = checkpoint["state_dict"]
        return dataclasses.replace(record, pretrained_fingerprint=tensors_fingerprint((k, state[k]) for k in frozen))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the record, with the frozen weights' fingerprint
        for key in self._frozen_pretrained_keys():
            del checkpoint["state_dict"][key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        info = info_of(checkpoint)
        expected = info.pretrained_fingerprint if info is not None else None
        if expected is None:
            return
        # An adapter-only checkpoint: the frozen pretrained weights come from this model, built from `weights` as
        # the run was; the fingerprint proves they are the ones the adapters were trained on.
        own = self.state_dict()
        keys = [k for k in self._frozen_pretrained_keys(always=True) if k not in checkpoint["state_dict"]]
        if tensors_fingerprint((k, own[k]) for k in keys) != expected:
            raise ConfigError(
                f"Expected the pretrained weights of backbone {self.backbone.name!r} (`weights: "
                f"{self.hparams.get('weights')}`) to be the ones this adapter-only checkpoint was trained on, but they "
                "differ; load it with the same `weights` (file or library version) as the run that wrote it."
            )
        checkpoint["state_dict"].update({k: own[k] for k in keys})

    def _frozen_pretrained_keys(self, always: bool = False) -> list[str]:
        """State-dict keys of the pretrained weights an adapter freezes, when checkpoints leave them out."""
        if self.adapter is None or (self.adapter.checkpoint != "adapter_only" and not always):
            return []
        prefix = "backbone.model."
        return sorted(prefix + name for name in self.backbone.frozen_pretrained_parameters)
