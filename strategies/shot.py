"""`SHOT`: source-free domain adaptation of a source-trained model to unlabelled target images."""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DataLoader

from tlkit.backbones import Backbone
from tlkit.checkpoint import check_same_classes, check_same_model, read_checkpoint
from tlkit.errors import ConfigError, config_error
from tlkit.functional import centroid_pseudo_labels, image_thumbnails, information_maximization_loss
from tlkit.protocols import UnlabelledTargetPool
from tlkit.strategies.domain_module import MAX_VALIDATOR_SAMPLES, DomainModule
from tlkit.strategies.source_reference import label_free_scores

# The checkpoint key under which the current epoch's pseudo-labels are saved (a mid-epoch resume reuses them).
CHECKPOINT_KEY = "shot_pseudo_labels"


class SHOT(DomainModule):
    """Source HypOthesis Transfer (Liang et al., ICML 2020): adapt a model trained on the source domain to unlabelled
    target images without any source image, the case where the source data cannot be shared.

    The source model's classifier (the "hypothesis") is kept frozen and the backbone is trained on the target to fit
    it: an information-maximisation loss (confident and diverse predictions) plus ``pseudo_label_weight`` x the
    cross-entropy on self-supervised pseudo-labels. At the start of every epoch the whole target training pool is
    labelled by its nearest class centroid in feature space (`centroid_pseudo_labels`), so the labels follow the
    target's clusters instead of the source classifier's mistakes. The datamodule serves target images only (no
    source loader, in training or validation), each with its index in the pool.

    The source model is any tlkit checkpoint with a backbone and head of this run's shape (`SourceOnly`, `FineTuning`,
    any domain-adaptation strategy), loaded when a new fit starts; a resumed fit restores its own checkpoint
    instead and does not need the source file. ``backbone``, ``head`` and the class names must match the source's.

    Args:
        source_checkpoint: path to the source-trained tlkit checkpoint (``.ckpt``).
        pseudo_label_weight: weight of the pseudo-label cross-entropy (SHOT's beta, 0.3; 0 is SHOT-IM).
        refinements: rounds of recomputing the class centroids from hard labels (SHOT: 1).

    The other arguments are `DomainModule`'s; ``weights`` come from the source checkpoint.

    Examples:
        >>> model = SHOT(source_checkpoint="runs/source_only/checkpoints/last.ckpt", backbone="tf_efficientnet_lite0")
    """

    uses_source = False
    target_indices = True

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        *,
        source_checkpoint: str,
        pseudo_label_weight: float = 0.3,
        refinements: int = 1,
        **kwargs,
    ) -> None:
        if pseudo_label_weight < 0:
            raise config_error("pseudo_label_weight", "a number >= 0", pseudo_label_weight)
        if refinements < 0:
            raise config_error("refinements", "an integer >= 0", refinements)
        self.source_checkpoint = source_checkpoint
        self.pseudo_label_weight = pseudo_label_weight
        self.refinements = refinements
        # Pseudo-labels of the target pool for `pseudo_label_epoch` (computed at each epoch's start).
        self.pseudo_labels: torch.Tensor | None = None
        self.pseudo_label_epoch = -1
        self._resumed = False  # set when Lightning restores a checkpoint of this run
        super().__init__(backbone, weights=None, **kwargs)
        # Not an argument of SHOT: a checkpoint that recorded it could not be loaded again (`weights` given twice).
        self.hparams.pop("weights", None)

    def _build_head(self, num_classes: int) -> None:
        super()._build_head(num_classes)
        self.head.requires_grad_(False)  # the source hypothesis stays fixed; only the backbone adapts

    def train(self, mode: bool = True) -> SHOT:
        """Train mode everywhere but the frozen head (an MLP head's BatchNorm statistics stay the source's too)."""
        super().train(mode)
        if self.head is not None:
            self.head.eval()
        return self

    # ------------------------------------------------------------------------------------------ the source model
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        if not isinstance(self.trainer.datamodule, UnlabelledTargetPool):
            raise ConfigError(
                f"Expected SHOT to train on a datamodule with `target_pool_loader` (DomainDataModule and its "
                f"subclasses), but got {type(self.trainer.datamodule).__name__}."
            )

    def on_fit_start(self) -> None:
        # After Lightning restored a resumed fit's own checkpoint (which holds the adapted weights): a new fit only.
        if not self._resumed:
            self.load_source_model()
            self.use_reference(self.score_source_model())

    def load_source_model(self) -> None:
        """Load the backbone and head from ``source_checkpoint``, after checking it is a model of this run's shape."""
        source = read_checkpoint(self.source_checkpoint, "model.source_checkpoint")
        state, where = source.contents.get("state_dict"), f"source checkpoint {source.path}"
        if not isinstance(state, dict):
            raise config_error("model.source_checkpoint", "a tlkit checkpoint file", f"{source.path} (no state_dict)")
        check_same_model(source.hyper_parameters, dict(self.hparams), where)
        check_same_classes(source.info.class_names if source.info else None, self.class_names, where)
        wanted = {k: v for k, v in state.items() if k.startswith(("backbone.", "head."))}
        missing, unexpected = self.load_state_dict(wanted, strict=False)
        missing = [k for k in missing if k.startswith(("backbone.", "head."))]
        if missing or unexpected:
            raise ConfigError(
                f"Expected {source.path} to hold a full backbone and head of this model, but it lacks {missing[:3]} "
                f"and has {unexpected[:3]} besides (an adapter-only checkpoint, or another architecture?)."
            )

    @torch.no_grad()
    def score_source_model(self) -> dict[str, float]:
        """The source model's label-free scores on the target validation split: the run's reference.

        Every rank scores the whole split with the pure functions (no collective: each gets the same numbers), so the
        reference is the same on every rank without a gather that would count each image once per rank.
        """
        loader = self.trainer.datamodule.domain_val_dataloaders()["target"]
        was_training = self.training
        self.eval()
        features, probabilities, thumbnails = [], [], []
        for inputs, _ in loader:  # as a validation step scores them: the head on the features, in eval mode
            batch_features = self.extract_features(move_data_to_device(inputs, self.device))
            features.append(batch_features.float())
            if self.clusters_pixels:  # images: val/pixel_ami clusters their thumbnails
                thumbnails.append(image_thumbnails(inputs))
            probabilities.append(self.head(batch_features).float().softmax(dim=1))
        self.train(was_training)
        rows = slice(MAX_VALIDATOR_SAMPLES)
        kept_thumbnails = torch.cat(thumbnails)[rows] if thumbnails else None
        scores = label_free_scores(torch.cat(probabilities)[rows], torch.cat(features)[rows], kept_thumbnails)
        return {**scores, "epoch": -1.0, "reference": 1.0}

    def reference_label(self) -> str:
        return f"the source model {self.source_checkpoint}"

    # -------------------------------------------------------------------------------------------- pseudo-labels
    def on_train_epoch_start(self) -> None:
        if self.pseudo_label_epoch != self.current_epoch:  # else: resumed mid-epoch, the checkpoint's labels stand
            self.pseudo_labels = self.label_target_pool(self.trainer.datamodule.target_pool_loader())
            self.pseudo_label_epoch = self.current_epoch
        self.pseudo_labels = self.pseudo_labels.to(self.device)  # once per epoch, not in every step

    @torch.no_grad()
    def label_target_pool(self, loader: DataLoader) -> torch.Tensor:
        """Centroid pseudo-labels for every image of ``loader`` (in its order), from the model in eval mode.

        Every DDP rank labels the whole pool, so all ranks hold the same labels without communication.
        """
        was_training = self.training
        self.eval()
        features, probabilities = [], []
        for inputs in loader:
            f = self.extract_features(move_data_to_device(inputs, self.device))
            features.append(f.float())
            probabilities.append(self.head(f).float().softmax(dim=1))
        self.train(was_training)
        features, probabilities = torch.cat(features), torch.cat(probabilities)
        labels = centroid_pseudo_labels(features, probabilities, self.refinements)
        # How far the centroids moved the classifier's labels: near 1 once adaptation has converged.
        agreement = (labels == probabilities.argmax(dim=1)).float().mean()
        self.log("train/pseudo_label_agreement", agreement, on_step=False, on_epoch=True, batch_size=len(labels))
        return labels

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.pseudo_labels is not None:
            checkpoint[CHECKPOINT_KEY] = {"epoch": self.pseudo_label_epoch, "labels": self.pseudo_labels.cpu()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._resumed = True
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is not None:
            self.pseudo_label_epoch, self.pseudo_labels = saved["epoch"], saved["labels"]

    # ------------------------------------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Information maximisation + ``pseudo_label_weight`` x cross-entropy on the pool's centroid labels."""
        inputs, indices = batch["target"]
        logits = self(inputs)
        im_loss = information_maximization_loss(logits)
        pseudo_loss = self.loss(logits, self.pseudo_labels[indices])
        loss = im_loss + self.pseudo_label_weight * pseudo_loss
        n = len(indices)
        self.log_loss("train/loss", loss, n, prog_bar=True, per_step=True)
        self.log_loss("train/im_loss", im_loss, n)
        self.log_loss("train/pseudo_label_loss", pseudo_loss, n)
        return loss
