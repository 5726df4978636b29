"""`ProgressiveUnfreezing`: unfreeze a backbone's layer groups from the head downwards, on a schedule."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from tlkit.callbacks._lightning_internals import is_compiled, rebuild_ddp_wrapper, reset_compiled_graphs
from tlkit.callbacks._monitor import check_monitor_is_logged
from tlkit.callbacks.unfreezing_schedule import Milestones, Plateau, UnfreezingSchedule
from tlkit.errors import ConfigError, config_error
from tlkit.features import FeatureCache, FeatureServing
from tlkit.protocols import LayerGroupTrainer, ServesFeatures


class ProgressiveUnfreezing(Callback):
    """Unfreeze a `TransferModule`'s backbone layer groups from the head downwards.

    Give exactly one schedule (or none, in a subclass that overrides `phase_for_epoch`):

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

    The schedule itself is an `UnfreezingSchedule` (and, for the plateau schedule, a `Plateau`), usable without a
    Trainer. Research code changes it through two public override points, as Lightning's ``BaseFinetuning``
    (``freeze_before_training``, ``finetune_function``) is extended: `phase_for_epoch` (when each phase starts: a
    schedule of one's own, with the phases of ``groups_per_step`` groups) and `trainable_parameters` (what a phase
    trains). Both must answer the same for the same epoch, so that a resumed run repeats the uninterrupted one.

    All progress is in ``state_dict``: resuming from any checkpoint reproduces the uninterrupted run. Under DDP the
    model's DDP wrapper is rebuilt at each phase change so the unfrozen parameters are all-reduced; plateau
    decisions are taken on rank 0 and broadcast. With a ``torch.compile``'d model, dynamo's caches are reset at a
    phase change.

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

    Examples:
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
        # A subclass with a `phase_for_epoch` of its own schedules the phases itself.
        own_schedule = type(self).phase_for_epoch is not ProgressiveUnfreezing.phase_for_epoch
        if len(given) != 1 and not (own_schedule and not given):
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
        self.max_epochs_per_phase = max_epochs_per_phase
        self.initial_groups = initial_groups
        #: Where the head-only phase keeps the backbone's features (None with ``cache_features: off``).
        self.feature_cache = None if cache_features == "off" else FeatureCache(cache_features, cache_dir)
        #: Resolved against the model's backbone at setup.
        self.schedule: UnfreezingSchedule | None = None
        # Progress: everything a resumed run needs, in plain types.
        self.plateau = Plateau(mode, patience, min_delta)
        self.phase = 0
        self.phase_start_epoch = 0
        self.advance_pending = False
        self._module: LayerGroupTrainer | None = None
        self._serving: FeatureServing | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            every_n_epochs=self.every_n_epochs, milestones=self.milestones, monitor=self.monitor
        )

    # ---------------------------------------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, LayerGroupTrainer):
            raise ConfigError(
                "Expected the model to be a tlkit TransferModule with a `backbone`, "
                f"but got {type(pl_module).__name__}."
            )
        if not pl_module.trains_backbone:
            raise ConfigError(
                "Expected a strategy that trains the backbone with ProgressiveUnfreezing, but got "
                f"{type(pl_module).__name__} (its backbone never trains). Use FineTuning."
            )
        self._module = pl_module
        self.schedule = UnfreezingSchedule.from_backbone(
            pl_module.backbone, self.initial_groups, self.groups_per_step, self.every_n_epochs, self.milestones
        )
        if (
            self.feature_cache is not None
            and not self.trainable_parameters(0)
            and isinstance(trainer.datamodule, ServesFeatures)
        ):
            # The whole backbone is a fixed function until the first phase change: its features are served cached.
            # The datamodule's setup ran before this hook, its loaders are built after it.
            self._serving = FeatureServing(self.feature_cache, pl_module.backbone)
            trainer.datamodule.serve_features(self._serving)
        self._apply(self.phase)

    def _apply(self, phase: int) -> None:
        module = self._module
        module.backbone.set_trainable_parameters(self.trainable_parameters(phase), freeze_bn=module.freeze_bn)
        if self._serving is not None:
            self._serving.set_active(not self.trainable_parameters(phase))

    # -------------------------------------------------------------------------------------- override points
    def phase_for_epoch(self, epoch: int) -> int:
        """The phase (0 to ``self.schedule.last_phase``) that ``epoch`` trains in; called at every epoch's start.

        Override it for a schedule of your own (the phases are those of ``groups_per_step`` groups, from the head
        down; ``self.phase`` is the current one). The default follows the configured schedule: gradual, milestones,
        or the next phase once ``monitor`` plateaued.

        Examples:
            >>> class Doubling(ProgressiveUnfreezing):  # phase k from epoch 2**(k-1): each lasts twice the last
            ...     def phase_for_epoch(self, epoch: int) -> int:
            ...         return min(epoch.bit_length(), self.schedule.last_phase)
        """
        scheduled = self.schedule.phase_at(epoch)
        if scheduled is not None:
            return scheduled
        return min(self.phase + int(self.advance_pending), self.schedule.last_phase)

    def trainable_parameters(self, phase: int) -> set[str]:
        """The backbone's parameter names that train in ``phase`` (the head always trains). Override it to train
        something other than whole layer groups from the top (norm layers only, say); the default is the
        schedule's (`UnfreezingSchedule.trainable_parameter_names`)."""
        return set(self.schedule.trainable_parameter_names(phase))

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        target = self.phase_for_epoch(epoch)
        if not 0 <= target <= self.schedule.last_phase:
            raise ConfigError(
                f"Expected {type(self).__name__}.phase_for_epoch({epoch}) to be a phase from 0 to "
                f"{self.schedule.last_phase}, but got {target!r}."
            )
        self.advance_pending = False
        if target != self.phase:
            before = set(pl_module.backbone.trainable_group_names)
            self.phase, self.phase_start_epoch = target, epoch
            self.plateau.reset()
            self._apply(target)
            rebuild_ddp_wrapper(trainer)
            if is_compiled(trainer):
                reset_compiled_graphs()
            trainable = pl_module.backbone.trainable_group_names
            unfrozen = [g for g in trainable if g not in before]
            rank_zero_info(
                f"ProgressiveUnfreezing: epoch {epoch}, phase {target}/{self.schedule.last_phase}: unfroze "
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
        if trainer.sanity_checking or self.phase >= self.schedule.last_phase:
            return
        plateaued = self.plateau.update(float(trainer.callback_metrics[self.monitor]))
        epochs_in_phase = trainer.current_epoch + 1 - self.phase_start_epoch
        advance = plateaued or (self.max_epochs_per_phase is not None and epochs_in_phase >= self.max_epochs_per_phase)
        # Ranks can see slightly different metric values; rank 0 decides for all so they unfreeze together.
        self.advance_pending = bool(trainer.strategy.broadcast(advance, src=0))

    # ---------------------------------------------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "phase_start_epoch": self.phase_start_epoch,
            "best": self.plateau.best,
            "wait": self.plateau.wait,
            "advance_pending": self.advance_pending,
            "trainable_groups": list(self._module.backbone.trainable_group_names) if self._module else [],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.phase = int(state_dict["phase"])
        self.phase_start_epoch = int(state_dict["phase_start_epoch"])
        self.plateau.best = state_dict["best"]
        self.plateau.wait = int(state_dict["wait"])
        self.advance_pending = bool(state_dict["advance_pending"])
        if self._module is not None:
            # Checkpoints are restored after `setup` and before DDP wraps the model: apply the phase now so the
            # wrapper registers the right parameters.
            self._apply(self.phase)
