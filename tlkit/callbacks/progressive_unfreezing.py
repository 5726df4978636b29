"""`ProgressiveUnfreezing`: unfreeze a backbone's layer groups from the head downwards, on a schedule."""

from __future__ import annotations

import re
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import Dataset
from typing_extensions import override

from tlkit.callbacks._distributed import rebuild_ddp_wrapper, reset_compiled_graphs
from tlkit.callbacks._monitor import check_monitor_is_logged
from tlkit.errors import ConfigError, closest, config_error
from tlkit.feature_cache import CacheMode, FeatureCache

GroupSpec = int | str
Milestones = dict[int, list[GroupSpec] | Literal["all"]]


class ProgressiveUnfreezing(Callback):
    """Unfreeze a `TransferModule`'s backbone layer groups from the head downwards.

    Give exactly one schedule:

    1. gradual: every ``every_n_epochs`` epochs, the next ``groups_per_step`` groups (ULMFiT's gradual unfreezing);
    2. milestones: ``{epoch: groups}``, groups as indices, group names or parameter-name regexes, or ``all``;
       checked against the model at setup. LP-FT (head only, then everything) is ``milestones={5: "all"}``;
    3. plateau: the next ``groups_per_step`` groups once ``monitor`` has not improved for ``patience`` epochs
       (or after ``max_epochs_per_phase`` epochs in a phase).

    Before the first phase change only the head and the top ``initial_groups`` groups train. Frozen groups get no
    gradient and no optimizer update (weight decay and momentum included), keep BatchNorm in eval mode, and cost no
    activation memory: autograd records nothing below the lowest trainable parameter. The param groups already exist
    (`TransferModule` builds them all up front), so schedulers, discriminative LRs and checkpoints are unaffected.

    While only the head trains (``initial_groups=0``, before the first phase change), the whole backbone is a fixed
    function: with a tlkit datamodule, its features are computed once and served from a `FeatureCache` (training
    features only with deterministic transforms, ``augment: false``; validation always). From the first phase
    that trains a backbone group on, the same dataloaders serve images.

    All progress is in ``state_dict``: resuming from any checkpoint reproduces the uninterrupted run. Under DDP the
    model's DDP wrapper is rebuilt at each phase change so the unfrozen parameters are all-reduced; plateau decisions
    are taken on rank 0 and broadcast. With a ``torch.compile``'d model, dynamo's caches are reset at a phase change.

    Args:
        every_n_epochs: gradual schedule: epochs between phase changes.
        groups_per_step: groups unfrozen per phase (gradual and plateau schedules).
        milestones: milestone schedule: ``{epoch: groups}``.
        monitor: plateau schedule: the logged metric to watch, e.g. ``val/loss``.
        mode: whether ``monitor`` should go ``min`` or ``max``.
        patience: epochs without improvement before the next phase.
        min_delta: smallest change of ``monitor`` that counts as an improvement.
        max_epochs_per_phase: plateau schedule: move on after this many epochs in a phase regardless.
        initial_groups: top backbone groups that train from the start (0: the head only).
        cache_features: head-only phase: serve cached backbone features from ``memory``, ``disk`` or ``off``.
        cache_dir: folder for ``disk`` caching.

    Example:
        >>> trainer = Trainer(callbacks=[ProgressiveUnfreezing(every_n_epochs=2), LRWarmup(duration=50)])
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        groups_per_step: int = 1,
        milestones: Milestones | None = None,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        patience: int = 2,
        min_delta: float = 0.0,
        max_epochs_per_phase: int | None = None,
        initial_groups: int = 0,
        cache_features: Literal["memory", "disk", "off"] = "memory",
        cache_dir: str = ".tlkit_cache",
    ) -> None:
        given = [
            name
            for name, v in (("every_n_epochs", every_n_epochs), ("milestones", milestones), ("monitor", monitor))
            if v
        ]
        if len(given) != 1:
            raise config_error(
                "ProgressiveUnfreezing schedule", "exactly one of every_n_epochs, milestones, monitor", given or None
            )
        if every_n_epochs is not None and every_n_epochs < 1:
            raise config_error("every_n_epochs", "an integer >= 1", every_n_epochs)
        if groups_per_step < 1:
            raise config_error("groups_per_step", "an integer >= 1", groups_per_step)
        if mode not in ("min", "max"):
            raise config_error("mode", "'min' or 'max'", mode)
        if patience < 0:
            raise config_error("patience", "an integer >= 0", patience)
        if max_epochs_per_phase is not None and max_epochs_per_phase < 1:
            raise config_error("max_epochs_per_phase", "an integer >= 1", max_epochs_per_phase)
        if initial_groups < 0:
            raise config_error("initial_groups", "an integer >= 0", initial_groups)
        if cache_features not in ("memory", "disk", "off"):
            raise config_error("cache_features", "'memory', 'disk' or 'off'", cache_features)
        for epoch in milestones or {}:
            if not isinstance(epoch, int) or epoch < 1:
                raise config_error("milestones", "keyed by epochs >= 1 (epoch 0 is `initial_groups`)", epoch)
        self.every_n_epochs = every_n_epochs
        self.groups_per_step = groups_per_step
        self.milestones = dict(sorted((milestones or {}).items()))
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.max_epochs_per_phase = max_epochs_per_phase
        self.initial_groups = initial_groups
        self.cache_features = cache_features
        self.cache_dir = cache_dir
        # Resolved at setup: the parameter names each phase makes trainable, and (epoch schedules) when it starts.
        self._phases: list[set[str]] = []
        self._phase_epochs: list[int] = []
        self._module: pl.LightningModule | None = None
        # Progress: everything a resumed run needs, in plain types.
        self.phase = 0
        self.phase_start_epoch = 0
        self.best: float | None = None
        self.wait = 0
        self.advance_pending = False
        # Shared with dataloader workers: whether datasets built during the head-only phase serve features now.
        self._serving_features = torch.zeros((), dtype=torch.bool).share_memory_()

    # ------------------------------------------------------------------------------------------------- schedule
    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            every_n_epochs=self.every_n_epochs, milestones=self.milestones, monitor=self.monitor
        )

    def _resolve(self, backbone: Any, spec: list[GroupSpec] | str, epoch: int) -> set[str]:
        """Parameter names a milestone entry refers to."""
        all_names = [n for g in backbone.layer_groups for n in g.parameter_names]
        if spec == "all":
            return set(all_names)
        if isinstance(spec, (int, str)):
            spec = [spec]
        names: set[str] = set()
        for entry in spec:
            if isinstance(entry, int) or entry in backbone.group_names:
                (group,) = backbone.resolve_groups([entry])
                names.update(group.parameter_names)
                continue
            try:
                pattern = re.compile(entry)
            except re.error as err:
                raise ConfigError(
                    f"Expected milestone {epoch} entry {entry!r} to be a group index, group name or parameter regex, "
                    f"but it is not a valid regex ({err}). Valid group names: {', '.join(backbone.group_names)}."
                ) from err
            matched = {n for n in all_names if pattern.search(n)}
            if not matched:
                suggestions = closest(entry, backbone.group_names)
                hint = f" Closest: {', '.join(suggestions)}." if suggestions else ""
                raise ConfigError(
                    f"Expected milestone {epoch} entry {entry!r} to be a group index, group name or parameter regex, "
                    f"but it matched no group and no parameter. Valid group names (all "
                    f"{len(backbone.group_names)}): {', '.join(backbone.group_names)}.{hint}"
                )
            names |= matched
        return names

    def _build_schedule(self, backbone: Any) -> None:
        groups = backbone.layer_groups
        n = len(groups)
        if self.initial_groups > n:
            raise config_error(
                "initial_groups", f"at most {n}, the number of groups of {backbone.name!r}", self.initial_groups
            )
        top = groups[n - self.initial_groups :]
        self._phases = [{name for g in top for name in g.parameter_names}]
        self._phase_epochs = [0]
        if self.milestones:
            for epoch, spec in self.milestones.items():
                self._phases.append(self._resolve(backbone, spec, epoch))
                self._phase_epochs.append(epoch)
            return
        below = groups[: n - self.initial_groups][::-1]  # next to unfreeze first
        for start in range(0, len(below), self.groups_per_step):
            self._phases.append(
                {name for g in below[start : start + self.groups_per_step] for name in g.parameter_names}
            )
        if self.every_n_epochs:
            self._phase_epochs += [p * self.every_n_epochs for p in range(1, len(self._phases))]

    @property
    def num_phases(self) -> int:
        return len(self._phases)

    def trainable_parameter_names(self, phase: int) -> set[str]:
        return set().union(*self._phases[: phase + 1])

    def head_only(self, phase: int) -> bool:
        """Whether no backbone parameter trains in ``phase``."""
        return not self.trainable_parameter_names(phase)

    # ---------------------------------------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        backbone = getattr(pl_module, "backbone", None)
        if backbone is None or not hasattr(backbone, "layer_groups"):
            raise ConfigError(
                "Expected the model to be a tlkit TransferModule with a `backbone`, "
                f"but got {type(pl_module).__name__}."
            )
        from tlkit.strategies import FeatureExtraction

        if isinstance(pl_module, FeatureExtraction):
            raise ConfigError(
                "Expected a strategy that trains the backbone with ProgressiveUnfreezing, but got FeatureExtraction "
                "(its backbone always runs under no_grad). Use FineTuning."
            )
        self._module = pl_module
        self._build_schedule(backbone)
        self._apply(self.phase)
        if self.cache_features != "off" and self.head_only(0):
            pl_module.feature_cache = _HeadOnlyPhaseCache(self, self.cache_features, self.cache_dir)

    def _apply(self, phase: int) -> None:
        module = self._module
        module.backbone.set_trainable_parameters(
            self.trainable_parameter_names(phase), freeze_bn=bool(getattr(module, "freeze_bn", False))
        )
        self._serving_features.fill_(self.head_only(phase))

    def _target_phase(self, epoch: int) -> int:
        if self._phase_epochs and len(self._phase_epochs) == len(self._phases):
            return max(p for p, start in enumerate(self._phase_epochs) if start <= epoch)
        return min(self.phase + int(self.advance_pending), self.num_phases - 1)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        target = self._target_phase(epoch)
        self.advance_pending = False
        if target != self.phase:
            before = set(pl_module.backbone.trainable_group_names)
            self.phase, self.phase_start_epoch = target, epoch
            self.best, self.wait = None, 0
            self._apply(target)
            rebuild_ddp_wrapper(trainer)
            if _is_compiled(trainer):
                reset_compiled_graphs()
            trainable = pl_module.backbone.trainable_group_names
            unfrozen = [g for g in trainable if g not in before]
            rank_zero_info(
                f"ProgressiveUnfreezing: epoch {epoch}, phase {target}/{self.num_phases - 1}: unfroze "
                f"{', '.join(unfrozen) or 'parameters within trainable groups'} "
                f"({len(trainable)}/{len(pl_module.backbone.layer_groups)} groups trainable)"
            )
        if trainer.logger is not None:
            trainer.logger.log_metrics(
                {"unfreezing/trainable_groups": float(len(pl_module.backbone.trainable_group_names))},
                step=trainer.global_step,
            )

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None:
            return
        check_monitor_is_logged(trainer, self.monitor, "ProgressiveUnfreezing")
        if trainer.sanity_checking or self.phase >= self.num_phases - 1:
            return
        value = float(trainer.callback_metrics[self.monitor])
        improved = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if improved:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        epochs_in_phase = trainer.current_epoch + 1 - self.phase_start_epoch
        advance = self.wait >= self.patience or (
            self.max_epochs_per_phase is not None and epochs_in_phase >= self.max_epochs_per_phase
        )
        # Ranks can see slightly different metric values; rank 0 decides for all so they unfreeze together.
        self.advance_pending = bool(trainer.strategy.broadcast(advance, src=0))

    # ---------------------------------------------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "phase_start_epoch": self.phase_start_epoch,
            "best": self.best,
            "wait": self.wait,
            "advance_pending": self.advance_pending,
            "trainable_groups": list(self._module.backbone.trainable_group_names) if self._module else [],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.phase = int(state_dict["phase"])
        self.phase_start_epoch = int(state_dict["phase_start_epoch"])
        self.best = state_dict["best"]
        self.wait = int(state_dict["wait"])
        self.advance_pending = bool(state_dict["advance_pending"])
        if self._module is not None:
            # Checkpoints are restored after `setup` and before DDP wraps the model: apply the phase now so the
            # wrapper registers the right parameters.
            self._apply(self.phase)


class _HeadOnlyPhaseCache(FeatureCache):
    """A `FeatureCache` whose datasets serve features while the phase trains the head only, images after.

    Lightning builds dataloaders before ``on_train_epoch_start`` applies an epoch's phase (and keeps them across
    epochs), so the switch happens inside the dataset, read at every item: no loader needs rebuilding.
    """

    def __init__(self, callback: ProgressiveUnfreezing, mode: CacheMode, directory: str) -> None:
        super().__init__(mode, directory)
        self.callback = callback

    def dataset(self, backbone: nn.Module, dataset: Dataset, data_key: str, transform: str, name: str = "") -> Dataset:
        if not self.callback.head_only(self.callback.phase):
            return dataset  # resumed after the head-only phase: nothing to cache
        features = super().dataset(backbone, dataset, data_key, transform, name)
        return _FeaturesWhileFrozen(dataset, features, self.callback._serving_features)


class _FeaturesWhileFrozen(Dataset):
    """(features, label) while ``serving`` is true, else the image dataset's (image, label)."""

    def __init__(self, images: Dataset, features: Dataset, serving: torch.Tensor) -> None:
        self.images, self.features, self.serving = images, features, serving

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Any:
        return self.features[index] if bool(self.serving) else self.images[index]


def _is_compiled(trainer: pl.Trainer) -> bool:
    return isinstance(trainer.strategy.model, torch._dynamo.eval_frame.OptimizedModule) or bool(
        getattr(trainer.lightning_module, "_compiler_ctx", None)
    )
