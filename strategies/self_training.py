"""`SelfTraining`: confidence-thresholded pseudo-labels with weak/strong augmentation (FixMatch-style)."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlkit.backbones import Backbone
from tlkit.errors import config_error
from tlkit.functional import align_distribution, class_balance_loss, input_count, join_inputs
from tlkit.strategies.domain_adaptation import DomainAdaptation


class SelfTraining(DomainAdaptation):
    """Self-training baseline (Sohn et al., 2020, applied to the target domain): the prediction on a weakly augmented
    target image, where its confidence reaches ``threshold``, becomes the label for a strongly augmented view of the
    same image. The datamodule supplies both views.

    Three measures keep the pseudo-labels from collapsing onto a few classes, which they did without them (MNIST ->
    digits, lite0, 240 steps: after 40 steps 25% of the target passed the 0.9 threshold at 43% accuracy, most of it
    one class, and training on those labels locked the error in, 33% target accuracy against SourceOnly's 60% in
    the benchmark): pseudo-labels count only after a ``warmup`` fraction of training on the source alone; they come
    from a mean teacher, a moving average of the model that does not follow each step's swings; and a class-balance
    loss keeps the batch's mean prediction spread over the classes. Warm-up alone, and warm-up with the teacher,
    still collapsed by the third epoch in those measurements; with all three the run reached 62% there, and 77%
    over 5 seeds at 600 steps in the benchmark.

    With ``distribution_alignment`` (ReMixMatch), the weak-view probabilities are divided by the running mean of
    the target predictions before thresholding: an unadapted model tends to predict a few classes for most target
    images, and without alignment the pseudo-labels reinforce that (confirmation bias).

    Args:
        threshold: minimum confidence for a pseudo-label to count.
        warmup: fraction of training (by step, resume-safe) before pseudo-labels count; 0 uses them from the start.
        teacher_decay: the pseudo-labels come from a teacher whose weights are this exponential moving average of
            the model's (mean teacher; 0: the model labels its own images, as in FixMatch).
        balance_weight: weight of a class-balance loss on the strong views' mean prediction (`class_balance_loss`),
            added to the pseudo-label loss: it keeps the predictions from collapsing onto a few classes.
        distribution_alignment: align pseudo-label probabilities to a uniform class distribution.
        alignment_momentum: momentum of the running mean of target predictions.

    The other arguments are `DomainAdaptation`'s (``trade_off`` weights the pseudo-label loss).
    """

    target_views = "weak_strong"

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        *,
        threshold: float = 0.9,
        warmup: float = 0.3,
        teacher_decay: float = 0.99,
        balance_weight: float = 1.0,
        distribution_alignment: bool = True,
        alignment_momentum: float = 0.9,
        **kwargs,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise config_error("threshold", "in (0, 1)", threshold)
        if not 0.0 <= warmup < 1.0:
            raise config_error("warmup", "in [0, 1)", warmup)
        if balance_weight < 0:
            raise config_error("balance_weight", "a number >= 0", balance_weight)
        if not 0.0 <= teacher_decay < 1.0:
            raise config_error("teacher_decay", "in [0, 1)", teacher_decay)
        if not 0.0 <= alignment_momentum < 1.0:
            raise config_error("alignment_momentum", "in [0, 1)", alignment_momentum)
        self.threshold = threshold
        self.warmup = warmup
        self.teacher_decay = teacher_decay
        self.balance_weight = balance_weight
        self.teacher: nn.ModuleDict | None = None  # built with the head (`build_adaptation_modules`)
        self.distribution_alignment = distribution_alignment
        self.alignment_momentum = alignment_momentum
        super().__init__(backbone, **kwargs)

    def adaptation_weight(self) -> float:
        """0 during the ``warmup`` fraction of training, then ``trade_off``."""
        return 0.0 if self.progress < self.warmup else self.trade_off

    def build_adaptation_modules(self, num_classes: int) -> None:
        # A buffer, so it is in checkpoints (exact resume) and moves with the model.
        self.register_buffer("target_prediction_mean", torch.full((num_classes,), 1.0 / num_classes))
        # A submodule, so it is in checkpoints (exact resume); out of the optimizer (see `param_groups`).
        if self.teacher_decay > 0:
            teacher = nn.ModuleDict({"backbone": copy.deepcopy(self.backbone), "head": copy.deepcopy(self.head)})
            self.teacher = teacher.requires_grad_(False)

    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        if self.teacher is not None:
            teacher = {id(p) for p in self.teacher.parameters()}
            groups[-1]["params"] = [p for p in groups[-1]["params"] if id(p) not in teacher]
        return groups

    @torch.no_grad()
    def teacher_logits(self, weak: torch.Tensor) -> torch.Tensor:
        """The teacher's logits on the weak views, in eval mode (its BatchNorm statistics are averaged too)."""
        self.teacher.eval()
        return self.teacher["head"](self.teacher["backbone"](weak))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Move the teacher towards the model: weights and BatchNorm statistics, ``teacher_decay`` per step.

        The decay starts low, (1 + step) / (10 + step), as in timm's model EMA: a teacher that averaged from the first
        step would be mostly the random head for hundreds of steps (0.99^100 = 37% of it) and predict nothing.
        """
        if self.teacher is None:
            return
        step = self.trainer.global_step
        decay = min(self.teacher_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for teacher, student in ((self.teacher["backbone"], self.backbone), (self.teacher["head"], self.head)):
                for t, s in zip(teacher.state_dict().values(), student.state_dict().values()):
                    if t.is_floating_point():
                        t.lerp_(s, 1.0 - decay)
                    else:
                        t.copy_(s)

    def pseudo_label_probabilities(self, weak_logits: torch.Tensor) -> torch.Tensor:
        probabilities = F.softmax(weak_logits.detach().float(), dim=1)
        if not self.distribution_alignment:
            return probabilities
        # The same batch mean on every rank, so the running means stay identical under DDP.
        batch_mean = self.all_gather(probabilities.mean(dim=0)).reshape(-1, probabilities.shape[1]).mean(dim=0)
        self.target_prediction_mean.mul_(self.alignment_momentum).add_(batch_mean, alpha=1 - self.alignment_momentum)
        return align_distribution(probabilities, self.target_prediction_mean)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if not self.adapting:
            return self.reference_step(batch, batch_idx)  # the source-only reference epochs
        xs, ys = batch["source"]
        weak, strong = batch["target"]
        n, m = input_count(xs), input_count(weak)
        if self.teacher is None:
            logits = self(join_inputs(xs, weak, strong))
            source_logits, weak_logits, strong_logits = logits[:n], logits[n : n + m], logits[n + m :]
        else:
            logits = self(join_inputs(xs, strong))
            source_logits, strong_logits, weak_logits = logits[:n], logits[n:], self.teacher_logits(weak)
        cls_loss = self.loss(source_logits, ys)
        confidence, pseudo_labels = self.pseudo_label_probabilities(weak_logits).max(dim=1)
        mask = (confidence >= self.threshold).float()
        pseudo_loss = (F.cross_entropy(strong_logits, pseudo_labels, reduction="none") * mask).mean()
        balance = class_balance_loss(strong_logits)
        adaptation = pseudo_loss + self.balance_weight * balance
        weight = self.adaptation_weight()
        loss = cls_loss + weight * adaptation
        self.log_loss("train/pseudo_label_ratio", mask.mean(), m)
        if mask.any():
            # How often the student already predicts the accepted pseudo-label on the strong view: near 1 with
            # a falling ratio of accepted labels is the model agreeing with itself on ever fewer images.
            agrees = (strong_logits.argmax(dim=1) == pseudo_labels).float()
            self.log_loss("train/pseudo_label_agreement", (agrees * mask).sum() / mask.sum(), int(mask.sum()))
        self.log_loss("train/class_balance_loss", balance, m)
        self.log_training(loss, cls_loss, adaptation, weight, source_logits, ys)
        return loss
