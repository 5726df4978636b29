"""`DomainModule`: a TransferModule trained on a source and a target domain; `SourceOnly`, the baseline."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MetricCollection

from tlkit.backbones import Backbone
from tlkit.callbacks.embedding_projector import EmbeddingProjector
from tlkit.checkpoint import AdaptationRecord, CheckpointInfo, adaptation_of
from tlkit.data_request import DataRequest, TargetViews
from tlkit.errors import ConfigError, config_error
from tlkit.metrics import (
    BatchNuclearNorm,
    ClassClusterAgreement,
    ImageClusterAgreement,
    InformationMaximization,
    MarginalEntropy,
    PredictedClasses,
    SafeInformationMaximization,
    SoftNeighborhoodDensity,
    TopClassShare,
)
from tlkit.protocols import DomainData
from tlkit.strategies.source_reference import ReferenceRecorder, end_of_fit_report, reference_scores
from tlkit.strategies.target_predictions import TargetPredictionKeeper
from tlkit.strategies.transfer_module import TransferModule
from tlkit.tasks import Classification, Mode, Task, direction_of

# Validators are computed on at most this many target validation images (SND is quadratic in their number).
MAX_VALIDATOR_SAMPLES = 2048
EMBEDDING_SAMPLES_PER_DOMAIN = 300


def target_validators(images: bool = True) -> MetricCollection:
    """Fresh label-free validators of the target validation predictions, as logged (``val/safe_im``, ...);
    ``val/pixel_ami`` only where the inputs are ``images`` (it clusters their pixels)."""
    validators = {
        "im": InformationMaximization(MAX_VALIDATOR_SAMPLES),
        "snd": SoftNeighborhoodDensity(MAX_VALIDATOR_SAMPLES),
        "bnm": BatchNuclearNorm(MAX_VALIDATOR_SAMPLES),
        "safe_im": SafeInformationMaximization(MAX_VALIDATOR_SAMPLES),
        "class_ami": ClassClusterAgreement(MAX_VALIDATOR_SAMPLES),
    }
    if images:
        validators["pixel_ami"] = ImageClusterAgreement(MAX_VALIDATOR_SAMPLES)
    return MetricCollection(validators, prefix="val/")


def target_diagnostics() -> MetricCollection:
    """Fresh collapse diagnostics of the target validation predictions, as logged (``val/target_top_class_share``,
    ...)."""
    return MetricCollection(
        {
            "top_class_share": TopClassShare(MAX_VALIDATOR_SAMPLES),
            "predicted_classes": PredictedClasses(MAX_VALIDATOR_SAMPLES),
            "marginal_entropy": MarginalEntropy(MAX_VALIDATOR_SAMPLES),
        },
        prefix="val/target_",
    )


class DomainModule(TransferModule):
    """Backbone + head trained on a labelled source domain and evaluated on a target domain.

    Use with a `DomainDataModule` (`DigitsMDataModule`, `DomainAdaptationDataModule`). The default training step is
    the source cross-entropy (plus the labelled target's, for strategies that declare ``uses_target_labels``);
    `DomainAdaptation` adds an adaptation loss, `JointTraining` weights the two domains.

    Every validation epoch logs source accuracy, target accuracy (the target validation split has labels in the bundled
    and folder datamodules) and validators that need no target label, computed on the target validation predictions:
    ``val/im`` (information maximisation), ``val/snd`` (soft neighbourhood density), ``val/bnm`` (batch nuclear-norm),
    ``val/safe_im`` (IM that scores below the run's source-only reference when the target predictions collapsed or the
    source accuracy fell: `tlkit.functional.safe_im_score`), ``val/class_ami`` (agreement of the predictions with
    k-means clusters of the features: `tlkit.functional.class_ami_score`) and ``val/pixel_ami`` (the same against
    clusters of the images' own pixels, which no training changes: `tlkit.functional.pixel_ami_score`; for targets
    whose classes are shapes, such as digits), and collapse diagnostics
    (``val/target_top_class_share``, ``val/target_predicted_classes``, ``val/target_marginal_entropy``).
    Checkpoints select on ``val/safe_im`` by default, never on target test data; the reference's values are logged
    beside every later validation as ``val/reference_*``, and the end of fit says in one line when the predictions
    collapsed or no adapted epoch beat the reference (`tlkit.strategies.source_reference`). At the
    end of fit, source and target features go to TensorBoard's embedding projector with domain and class metadata.

    Args:
        backbone_lr_factor: learning-rate factor of every backbone group relative to the head (0.1 is customary).

    The other arguments are `TransferModule`'s.
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True

    #: How many augmented views of each target image a training batch carries (asked of the datamodule).
    target_views: ClassVar[TargetViews] = "single"
    #: Whether the strategy trains on labelled target images (semi-supervised and supervised DA).
    uses_target_labels: ClassVar[bool] = False
    #: Whether the strategy sees source images; False (source-free, SHOT) asks the datamodule to serve none.
    uses_source: ClassVar[bool] = True
    #: Whether target training samples come with their index in the target pool (asked of the datamodule).
    target_indices: ClassVar[bool] = False

    def __init__(
        self, backbone: str | Backbone = "tf_efficientnet_lite0", *, backbone_lr_factor: float = 0.1, **kwargs
    ) -> None:
        if not 0.0 < backbone_lr_factor <= 1.0:
            raise config_error("backbone_lr_factor", "in (0, 1]", backbone_lr_factor)
        if kwargs.get("temperature_scaling"):
            raise config_error(
                "temperature_scaling",
                f"false for {type(self).__name__}: a temperature is fitted on labelled validation predictions, and "
                "the target's validation split has none to fit it on",
                True,
            )
        task = Task.from_config(kwargs["task"]) if kwargs.get("task") is not None else None
        if task is not None and not isinstance(task, Classification):
            raise config_error(
                "task",
                f"Classification for {type(self).__name__} (domain adaptation is single-label: its losses and "
                "validators read one class per example)",
                type(task).__name__,
            )
        self.backbone_lr_factor = backbone_lr_factor
        super().__init__(backbone, **kwargs)
        # Label-free model selection on the target validation predictions (synchronised across ranks by torchmetrics).
        self.clusters_pixels = not (self.backbone.reads_audio or self.backbone.reads_text)  # val/pixel_ami
        self.target_validators = target_validators(images=self.clusters_pixels)
        # Collapse diagnostics on the same predictions (shown in TensorBoard and `tlkit select`, not the progress bar).
        self.target_diagnostics = target_diagnostics()
        #: The scores of the unadapted model (`reference_epochs`, or SHOT's source model), once measured.
        self.source_reference: dict[str, float] | None = None
        #: What each validation measured (`source_reference.RECORDED`), in order; read by the end-of-fit report.
        self.adaptation_history: list[dict[str, float]] = []
        self.resumed_reference_epochs: int | None = None

    @classmethod
    def default_monitor(cls, task: Task) -> tuple[str, Mode]:
        """``val/safe_im``: checkpoints are chosen without target labels."""
        return ("val/safe_im", "max")

    @classmethod
    def metric_directions(cls, task: Task) -> dict[str, Mode]:
        """The task's metrics, each domain's accuracy, the label-free validators and collapse diagnostics (as
        each metric says), and their source-only reference's values (``val/reference_*``)."""
        directions = {**super().metric_directions(task), "val/source_acc": "max", "val/target_acc": "max"}
        for collection in (target_validators(), target_diagnostics()):
            for name, metric in collection.items():
                if (mode := direction_of(metric)) is not None:
                    directions[name] = directions[name.replace("val/", "val/reference_", 1)] = mode
        return directions

    #: Epochs at the start of training without the adaptation loss, whose validation is the run's source-only
    #: reference (`DomainAdaptation` sets it; 0 here: no reference).
    reference_epochs: int = 0
    #: Whether training changes the model for the target: a collapse on the target is then read as negative
    #: transfer, and otherwise as a source model that does not carry over (`SourceOnly`).
    adapts_to_target: bool = True

    def lr_scale(self, depth: int) -> float:
        return 1.0 if depth == 0 else self.backbone_lr_factor

    def data_request(self) -> DataRequest:
        return replace(
            super().data_request(),
            target_views=self.target_views,
            source_free=not self.uses_source,
            target_indices=self.target_indices,
        )

    @property
    def validation_domains(self) -> tuple[str, ...]:
        """The domain of each validation loader, by ``dataloader_idx`` (the datamodule serves them in this order)."""
        return ("source", "target") if self.uses_source else ("target",)

    def _build_head(self, num_classes: int) -> None:
        super()._build_head(num_classes)
        self.build_adaptation_modules(num_classes)
        # Each domain's score is the task's checkpoint metric (``val/source_acc``, ``val/target_acc``), as the task
        # computes it: the one place adapting to another task changes.
        name = self.task.monitor[0].split("/", 1)[1]
        self.domain_metrics = nn.ModuleDict(
            {
                domain: MetricCollection({name: self.task.metric_for_selection()}, prefix=f"val/{domain}_")
                for domain in ("source", "target")
            }
        )

    def build_adaptation_modules(self, num_classes: int) -> None:
        """Create extra modules (a domain discriminator, ...) once the number of classes is known."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, DomainData):
            raise ConfigError(
                f"Expected {type(self).__name__} to train on a DomainDataModule (DigitsMDataModule, "
                f"DomainAdaptationDataModule), but got {type(datamodule).__name__}."
            )
        if self.uses_target_labels and datamodule.target_labels == "none":
            raise ConfigError(
                f"Expected `data.target_labels` to be 'few' or 'all' for {type(self).__name__}, which trains on "
                "labelled target images, but got 'none'."
            )

    # ---------------------------------------------------------------------------------------------- training
    @property
    def progress(self) -> float:
        """Training progress in [0, 1], from the restored step counter, so schedules survive a resume."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        return min(1.0, self.trainer.global_step / max(1, total))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Source cross-entropy only (the target's images pass through no layer, BatchNorm statistics included)."""
        xs, ys = batch["source"]
        logits = self(xs)
        loss = self.loss(logits, ys)
        if self.uses_target_labels:
            loss = loss + self.labelled_target_loss(batch["target_labeled"])
        self.log_training(loss, loss, None, 0.0, logits, ys)
        return loss

    def labelled_target_loss(self, labelled: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = labelled
        return self.loss(self(x), y)

    def log_training(self, loss, cls_loss, adaptation, weight, source_logits, source_labels) -> None:
        n = len(source_labels)
        self.log_loss("train/loss", loss, n, prog_bar=True, per_step=True)
        self.log_loss("train/cls_loss", cls_loss, n)
        if adaptation is not None:
            self.log_loss("train/adaptation_loss", adaptation, n)
            self.log("train/adaptation_weight", weight, on_step=True, on_epoch=False, batch_size=n)
        self.metrics["train_metrics"].update(source_logits, source_labels)  # logged at epoch end

    # -------------------------------------------------------------------------------------------- validation
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        features = self.extract_features(x)
        logits = self.head(features)
        domain = self.validation_domains[dataloader_idx]
        temperature = self.calibration_temperature
        self.domain_metrics[domain].update(*self.task.metric_inputs(logits, y, temperature))  # logged at epoch end
        if domain == "source":
            self.target_validators["safe_im"].update_source(logits, y)  # whether adapting cost source accuracy
        if domain == "target":
            self.log(
                "val/loss",
                self.loss(logits, y),
                on_epoch=True,
                add_dataloader_idx=False,
                batch_size=len(y),
                sync_dist=True,
            )
            probabilities = self.task.postprocess(logits, temperature)  # what predict and export give
            images = {"images": x} if self.clusters_pixels else {}
            self.target_validators.update(probabilities, features=features, **images)
            self.target_diagnostics.update(probabilities)
            self.confusion.update(logits, y)  # the target's: where adaptation is judged
        self.validation_features(features, domain)

    def validation_features(self, features: torch.Tensor, domain: str) -> None:
        """Hook for strategies that score features per domain (e.g. the domain discriminator's accuracy)."""

    def on_validation_epoch_end(self) -> None:
        for metrics in self.domain_metrics.values():
            self.log_epoch_metrics(metrics)
        # Every rank scores the same gathered predictions, so checkpointing and early stopping agree across ranks.
        self.log_epoch_metrics(self.target_validators, prog_bar=True)
        self.log_epoch_metrics(self.target_diagnostics)
        if self.source_reference is not None and not self.trainer.sanity_checking:
            # Beside every validation: the same values on every rank (recorded from synchronised metrics), so their
            # mean across ranks is each value to the bit; synchronised all the same, as Lightning asks of every value
            # logged per epoch under DDP (it warns once per key otherwise).
            for name, value in self.source_reference.items():
                if name.startswith("val/"):
                    self.log(name.replace("val/", "val/reference_", 1), value, on_epoch=True, sync_dist=True)

    # ---------------------------------------------------------------------------------------- the reference
    def record_validation(self, values: dict[str, float]) -> None:
        """Keep one validation's values (called by `ReferenceRecorder` before the epoch's checkpoint is saved); a
        validation of a source-only epoch (`reference_epochs`) becomes the run's reference."""
        row = {**values, "epoch": float(self.current_epoch)}
        if self.current_epoch < self.reference_epochs:
            row["reference"] = 1.0
            self.use_reference(row)
        # A resumed run validates an epoch again only when it was killed before that epoch's checkpoint.
        self.adaptation_history = [r for r in self.adaptation_history if r["epoch"] != row["epoch"]] + [row]

    def use_reference(self, reference: dict[str, float] | None) -> None:
        """Make ``reference`` (what `record_validation` recorded of the unadapted model) the run's reference: logged
        beside every later validation, and what ``val/safe_im`` compares each adapted epoch with."""
        self.source_reference = reference
        self.target_validators["safe_im"].set_reference(reference_scores(reference))

    def on_fit_end(self) -> None:
        callback = self.trainer.checkpoint_callback
        monitor, mode = (callback.monitor, callback.mode) if isinstance(callback, ModelCheckpoint) else (None, "max")
        label = self.reference_label()
        lines = end_of_fit_report(
            self.adaptation_history,
            self.source_reference,
            label,
            self.num_classes or 0,
            monitor,
            mode,
            adapts_to_target=self.adapts_to_target,
        )
        for line in lines:
            rank_zero_info(f"tlkit: {type(self).__name__}: {line}")

    def reference_label(self) -> str:
        """How the end-of-fit report names the reference (SHOT's is its source checkpoint)."""
        epochs = self.reference_epochs
        return f"source-only epoch{'s' if epochs > 1 else ''} {epochs - 1 if epochs == 1 else f'0-{epochs - 1}'}"

    def checkpoint_record(self, checkpoint: dict[str, Any]) -> CheckpointInfo:
        record = super().checkpoint_record(checkpoint)
        adaptation = AdaptationRecord(self.source_reference, tuple(self.adaptation_history), self.reference_epochs)
        return replace(record, adaptation=adaptation)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        adaptation = adaptation_of(checkpoint)
        self.use_reference(adaptation.reference)
        self.adaptation_history = list(adaptation.epochs)
        #: The source-only epochs the resumed run trained with (None: not recorded): it goes on with as many.
        self.resumed_reference_epochs = adaptation.reference_epochs

    # ------------------------------------------------------------------------------------------------ monitoring
    def configure_callbacks(self) -> list[Callback]:
        """Source and target features go to TensorBoard's embedding projector at the end of fit; the best
        ``val/safe_im`` epoch's target predictions to the run folder (for ``tlkit select --by consensus``)."""
        return [EmbeddingProjector(EMBEDDING_SAMPLES_PER_DOMAIN), ReferenceRecorder(), TargetPredictionKeeper()]

    # ------------------------------------------------------------------------------------------------- testing
    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Target test accuracy and F1 as ``test/acc`` and ``test/f1``."""
        return self._shared_step(batch, "test")


class SourceOnly(DomainModule):
    """The baseline: train on the labelled source domain only, evaluate on the target.

    Takes `DomainModule`'s arguments.
    """

    adapts_to_target = False
