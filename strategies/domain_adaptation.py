"""`DomainAdaptation`: the base of the strategies that add an adaptation loss to the source cross-entropy."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.functional import input_count, join_inputs
from tlkit.strategies.domain_module import DomainModule

# ``reference_epochs: auto`` trains the source-only reference for at least this many optimizer steps. Measured on
# the small-target shifts (benchmarks.md, "A longer reference"): one reference epoch of 40 steps left DeepCORAL and DAN
# below SourceOnly on some seeds, two (80 steps) on none; on the full-size shifts one epoch of 100 steps does.
REFERENCE_STEPS = 80


class DomainAdaptation(DomainModule):
    """A `DomainModule` that adapts to the target domain with a loss of its own.

    Each training step runs the source and target batches through the backbone together and adds the strategy's
    `adaptation_loss` on the features and logits, weighted by ``trade_off``, to the source cross-entropy. Strategies
    override `adaptation_loss` (and, where they need more, `training_step`).

    The first ``reference_epochs`` train as `SourceOnly` does (the source cross-entropy alone; the target passes
    through no layer): their validation is the run's source-only reference, logged beside every later validation
    (``val/reference_*``) and a candidate of the checkpoint choice like any epoch, so that when no adapted epoch
    scores above it the selected checkpoint is the unadapted model (and the end of fit says so). The adaptation
    schedules (DANN's gradient-reversal warm-up) start when adaptation does.

    Args:
        trade_off: weight of the adaptation loss.
        reference_epochs: source-only epochs before adapting (0: none, and no reference to fall back to); ``auto``:
            the fewest whole epochs of at least `REFERENCE_STEPS` optimizer steps, at most half the run's epochs
            (one epoch of 100 steps, two of 40; resolved when training starts, and said in one line).

    The other arguments are `DomainModule`'s.
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        *,
        trade_off: float = 1.0,
        reference_epochs: int | Literal["auto"] = "auto",
        **kwargs,
    ) -> None:
        if trade_off < 0:
            raise config_error("trade_off", "a number >= 0", trade_off)
        explicit = isinstance(reference_epochs, int) and not isinstance(reference_epochs, bool)
        if not (reference_epochs == "auto" or (explicit and reference_epochs >= 0)):
            raise config_error("reference_epochs", "an integer >= 0 or 'auto'", reference_epochs)
        self.trade_off = trade_off
        #: What the config asked for (an integer, or ``auto``); `reference_epochs` is the number it resolves to.
        self.reference_setting = reference_epochs
        # Until training starts (`resolve_reference_epochs`), ``auto`` counts as one epoch.
        self.reference_epochs = 1 if reference_epochs == "auto" else reference_epochs
        super().__init__(backbone, **kwargs)

    def on_train_start(self) -> None:
        super().on_train_start()
        self.reference_epochs = self.resolve_reference_epochs()

    def resolve_reference_epochs(self) -> int:
        """The number of source-only epochs this run trains: ``reference_epochs`` as given, or ``auto``'s count from
        the epoch length the trainer measured (the same on every rank), or on a resumed run the count its checkpoint
        recorded; a run with no epoch after them adapts from the first epoch instead, and says so."""
        if self.reference_setting == "auto" and self.resumed_reference_epochs is not None:
            # Resumed (perhaps to more epochs): the epochs already trained keep the meaning they were trained with.
            return self.resumed_reference_epochs
        name = type(self).__name__
        trainer = self.trainer
        batches = trainer.num_training_batches
        per_epoch = max(1, int(batches) // max(1, trainer.accumulate_grad_batches)) if batches != float("inf") else 0
        epochs = 1 if trainer.fast_dev_run else trainer.max_epochs
        if not epochs or epochs < 0:  # bounded by max_steps (or not at all): the epochs its steps fill
            total = trainer.estimated_stepping_batches
            epochs = math.ceil(total / per_epoch) if per_epoch and total != float("inf") else None
        if self.reference_setting != "auto":
            if self.reference_setting and epochs is not None and epochs <= self.reference_setting:
                # A quick try (--trainer.max_epochs 1, fast_dev_run) should adapt, not train source-only.
                rank_zero_info(
                    f"tlkit: {name}: adapting from the first epoch, without a source-only reference: "
                    f"trainer.max_epochs ({epochs}) leaves no epoch after model.reference_epochs "
                    f"({self.reference_setting})"
                )
                return 0
            return self.reference_setting
        wanted = math.ceil(REFERENCE_STEPS / per_epoch) if per_epoch else 1
        resolved = wanted if epochs is None else min(wanted, epochs // 2)
        if resolved == 0:
            rank_zero_info(
                f"tlkit: {name}: adapting from the first epoch, without a source-only reference: "
                f"trainer.max_epochs ({epochs}) leaves no epoch after one (model.reference_epochs: auto)"
            )
        else:
            rule = f"at least {REFERENCE_STEPS} steps"
            if resolved < wanted:
                rule = f"{REFERENCE_STEPS} steps would take {wanted} epochs; at most half the run's {epochs}"
            rank_zero_info(
                f"tlkit: {name}: source-only reference: {resolved} epoch{'s' if resolved > 1 else ''} of "
                f"{per_epoch} steps before adapting (model.reference_epochs: auto: {rule})"
            )
        return resolved

    @property
    def adapting(self) -> bool:
        """Whether this epoch trains with the adaptation loss (after the source-only `reference_epochs`)."""
        return self.current_epoch >= self.reference_epochs

    @property
    def adaptation_progress(self) -> float:
        """Progress in [0, 1] of the adapting part of training (0 until the reference epochs end), from the
        restored step counter, so schedules survive a resume."""
        if self._trainer is None:
            return 1.0
        per_epoch = max(1, self.trainer.num_training_batches // max(1, self.trainer.accumulate_grad_batches))
        start = self.reference_epochs * per_epoch if self.trainer.num_training_batches != float("inf") else 0
        total = self.trainer.estimated_stepping_batches
        return min(1.0, max(0.0, (self.trainer.global_step - start) / max(1, total - start)))

    def reference_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """A step of the source-only reference epochs: `DomainModule`'s source cross-entropy, plus zero times the
        adaptation modules' parameters (a discriminator), which DDP requires every step to reach (it refuses a
        parameter no loss used); their gradients are zero, and the backbone and head train as SourceOnly's."""
        loss = DomainModule.training_step(self, batch, batch_idx)
        inside = {id(p) for p in (*self.backbone.parameters(), *self.head.parameters())}
        idle = [p for p in self.parameters() if p.requires_grad and id(p) not in inside]
        return loss + sum(p.sum() for p in idle) * 0.0 if idle else loss

    def adaptation_weight(self) -> float:
        """The adaptation loss's weight at this step (``trade_off``; override for a schedule)."""
        return self.trade_off

    def adaptation_loss(
        self,
        source_features: torch.Tensor,
        target_features: torch.Tensor,
        source_logits: torch.Tensor,
        target_logits: torch.Tensor,
    ) -> torch.Tensor | None:
        """The strategy's loss on one source and one target batch; None for no adaptation."""
        return None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if not self.adapting:
            return self.reference_step(batch, batch_idx)
        xs, ys = batch["source"]
        xt = batch["target"]
        n = input_count(xs)
        features = self.extract_features(join_inputs(xs, xt))
        logits = self.head(features)
        cls_loss = self.loss(logits[:n], ys)
        weight = self.adaptation_weight()
        adaptation = self.adaptation_loss(features[:n], features[n:], logits[:n], logits[n:])
        loss = cls_loss if adaptation is None else cls_loss + weight * adaptation
        if self.uses_target_labels:
            loss = loss + self.labelled_target_loss(batch["target_labeled"])
        self.log_training(loss, cls_loss, adaptation, weight, logits[:n], ys)
        return loss
