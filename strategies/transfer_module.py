"""`TransferModule`: backbone + new head, the LightningModule every tlkit strategy derives from."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from tlkit.backbones import Backbone, DataConfig
from tlkit.checkpoint import CheckpointInfo, class_path, info_of, write_info
from tlkit.data_request import DataRequest, Features
from tlkit.errors import ConfigError, config_error, refuse_base_class
from tlkit.protocols import (
    CarriesRunConfig,
    CountedClasses,
    DescribesTargets,
    IdentifiedClasses,
    NamedClasses,
    RecordsDataSource,
    ResolvesDataConfig,
)
from tlkit.randomness import default_seed, reseed_for_step
from tlkit.tasks import Classification, Mode, Task
from tlkit.tasks.heads import HeadKind, HeadOptions

Stage = Literal["train", "val", "test"]
STAGES: tuple[Stage, ...] = ("train", "val", "test")


class TransferModule(LightningModule):
    """A pretrained backbone with a new head, trained end to end for a task (single-label classification by default).

    Strategies subclass it and override only what differs (which groups train, the loss, extra modules). The
    optimizer gets one named param group per backbone layer group plus ``head`` (every parameter outside the
    backbone), all created up front: freezing only flips ``requires_grad``, so schedulers and resume stay consistent.

    Args:
        backbone: a timm name, ``torchvision:<name>``, or a ready `Backbone` (research code).
        weights: ``imagenet``, ``null`` for random init, or a path to a state-dict file.
        num_classes: number of outputs (classes, labels or regression targets); taken from the datamodule's
            ``num_classes`` when omitted.
        head: ``linear``, or ``mlp`` (Linear-BN-ReLU-Dropout-Linear).
        head_hidden_dim: width of the MLP head's hidden layer.
        dropout: dropout before the head's last Linear layer.
        label_smoothing: cross-entropy label smoothing in [0, 1) (single-label classification only).
        optimizer: optimizer factory; its ``lr`` is the head's learning rate. Default AdamW(lr=1e-3, wd=0.01).
        lr_scheduler: scheduler factory; default (``null``) is cosine annealing to zero over the run, per step.
        scheduler_interval: whether a configured ``lr_scheduler`` steps every ``step`` or every ``epoch``.
        temperature_scaling: fit a temperature on the validation predictions at every validation (Guo et al.,
            2017) and apply it to the probabilities ``predict``, ``test`` and the exported model give; accuracy is
            unchanged. Each checkpoint keeps the temperature fitted at its epoch (``calibration_temperature``).
            Classification and multi-label tasks (one temperature for every label's sigmoid).
        task: what the model predicts and how it is judged (`tlkit.tasks`): ``Classification`` (default),
            ``MultiLabel`` or ``Regression``; it sets the loss, the metrics, what checkpoints select on and what
            ``predict`` and the exported model return.

    Examples:
        >>> model = TransferModule("resnet18", weights=None, num_classes=10)
        >>> [g["name"] for g in model.param_groups()][-2:]
        ['layer4', 'head']
    """

    #: Whether the backbone can train at all; callbacks that unfreeze layer groups refuse a strategy without it.
    trains_backbone: ClassVar[bool] = True
    #: Whether BatchNorm running statistics stay fixed in trainable groups (`FineTuning`'s ``freeze_bn``).
    freeze_bn: bool = False

    def __init__(
        self,
        backbone: str | Backbone = "tf_efficientnet_lite0",
        weights: str | None = "imagenet",
        num_classes: int | None = None,
        head: HeadKind = "linear",
        head_hidden_dim: int = 512,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        temperature_scaling: bool = False,
        task: Task | None = None,
    ) -> None:
        super().__init__()
        refuse_base_class(self, "model", "tlkit.strategies")  # before building the backbone
        #: What shapes the head (`tlkit.tasks.heads`): options the task's head does not read are refused below.
        self.head_options = HeadOptions(head, head_hidden_dim, dropout)
        if not 0.0 <= label_smoothing < 1.0:
            raise config_error("label_smoothing", "in [0, 1)", label_smoothing)
        #: What the model predicts and how it is judged (`tlkit.tasks`); a checkpoint's hyperparameters hold it as a
        #: config entry, which comes back here on load.
        self.task = Task.from_config(task) if task is not None else Classification()
        self.task.check_head_options(self.head_options)
        if label_smoothing and not isinstance(self.task, Classification):
            raise config_error("label_smoothing", f"0 with task {type(self.task).__name__}", label_smoothing)
        if temperature_scaling and not self.task.calibrates:
            raise config_error(
                "temperature_scaling", f"false with task {type(self.task).__name__} (no probabilities)", True
            )
        if num_classes is not None and num_classes < self.task.min_outputs:
            raise config_error(
                "num_classes", f"an integer >= {self.task.min_outputs} for task {type(self.task).__name__}", num_classes
            )
        if scheduler_interval not in ("step", "epoch"):
            raise config_error("scheduler_interval", "'step' or 'epoch'", scheduler_interval)
        ignore = ["optimizer", "lr_scheduler", "task"] + ([] if isinstance(backbone, str) else ["backbone"])
        self.save_hyperparameters(ignore=ignore)
        self.hparams["task"] = self.task.config()  # plain data: checkpoints stay readable with weights_only=True
        dense = self.task.reads_feature_maps
        self.backbone = (
            backbone if isinstance(backbone, Backbone) else Backbone(backbone, weights=weights, feature_maps=dense)
        )
        if dense and not self.backbone.feature_info:
            raise config_error(
                "backbone",
                f"a Backbone built with feature_maps=True for task {type(self.task).__name__}",
                self.backbone,
            )
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.scheduler_interval = scheduler_interval
        self.label_smoothing = label_smoothing
        self.temperature_scaling = temperature_scaling
        #: What the logits are divided by before the softmax of predictions, tests and exports (1: none). A buffer,
        #: so every checkpoint carries the value fitted at its epoch and DDP ranks hold the same.
        self.register_buffer("calibration_temperature", torch.ones((), dtype=torch.float64))
        self._validation_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.head: nn.Module | None = None
        #: Class names in label order, from the datamodule (``classes``) or a checkpoint; used by predict.
        self.class_names: list[str] | None = None
        #: The ids the user's file gave the classes (a COCO file's category ids), in label order, from the datamodule
        #: or a checkpoint; predictions are written with them. None where the data has none.
        self.class_ids: list[int] | None = None
        #: Base seed of the run's randomness (see `tlkit.randomness`); fixed at the first fit, kept in checkpoints.
        self.run_seed: int | None = None
        self._saved_data_config: dict[str, Any] | None = None  # from a checkpoint (see `trained_data_config`)
        self._saved_data_source: dict[str, Any] | None = None  # from a checkpoint: kept by the next one written
        if num_classes is not None:
            self._build_head(num_classes)
        self.configure_backbone()

    def configure_backbone(self) -> None:
        """Called once at the end of ``__init__``: where a strategy freezes what it does not train."""

    @property
    def checkpoint_monitor(self) -> tuple[str, Mode]:
        """(metric, mode) that checkpoints select on by default in the `tlkit` command (`default_monitor`)."""
        return type(self).default_monitor(self.task)

    @classmethod
    def default_monitor(cls, task: Task) -> tuple[str, Mode]:
        """(metric, mode) a run of this strategy with ``task`` checkpoints on unless told otherwise: the task's.
        A class method, so that commands reading a finished run's config can ask it without building a model."""
        return task.monitor

    @classmethod
    def metric_directions(cls, task: Task) -> dict[str, Mode]:
        """Every metric a run of this strategy with ``task`` logs that has a better direction, by its logged name
        (``val/mae``: ``min``): the task's metrics at each stage. Strategies that log more extend it; ``tlkit
        select`` and ``tlkit tune`` ask it, and refuse to guess a metric it does not name."""
        return {f"{stage}/{name}": mode for stage in STAGES for name, mode in task.metric_directions().items()}

    def logged_metric_directions(self) -> dict[str, Mode]:
        """`metric_directions` of this model's strategy and task."""
        return type(self).metric_directions(self.task)

    # ------------------------------------------------------------------------------------------- what the data needs
    def data_request(self) -> DataRequest:
        """What this model asks of its datamodule: the backbone's input config and its image-size check. Strategies
        extend it (``dataclasses.replace``)."""
        return DataRequest.for_backbone(self.backbone)

    # ----------------------------------------------------------------------------------------------------- building
    def make_head(self, num_classes: int) -> nn.Module:
        """The new head, as the task builds it (`Task.make_head`; ``head``, ``head_hidden_dim`` and ``dropout`` shape
        it where the task reads them); strategies with a classifier of their own override it."""
        return self.task.make_head(self.backbone, num_classes, self.head_options)

    def _build_head(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.task.build(num_classes)
        self.head = self.make_head(num_classes)
        self.metrics = nn.ModuleDict(
            {
                f"{s}_metrics": MetricCollection(
                    self.task.make_train_metrics() if s == "train" else self.task.make_metrics(), prefix=f"{s}/"
                )
                for s in ("train", "val", "test")
            }
        )
        #: The task's per-class detail (a segmenter's IoU of each class), logged beside the metrics but kept off the
        #: progress bar; validation and test only.
        self.detail_metrics = nn.ModuleDict(
            {
                f"{s}_details": MetricCollection(details, prefix=f"{s}/")
                for s in ("val", "test")
                if (details := self.task.make_detail_metrics())
            }
        )
        #: The test split's expected calibration error (15 bins, as Guo et al. report it), with the fitted temperature
        #: and, beside it when temperature scaling is on, without; None for a task without probabilities.
        self.test_ece = self.task.calibration_error()
        self.unscaled_ece = self.task.calibration_error()
        #: The validation probabilities (temperature-scaled) against the truth, drawn as a reliability diagram and reset
        #: by `TensorBoardReport` (not logged as a metric; not in checkpoints).
        self.val_calibration = self.task.calibration_error()
        #: Validation predictions against labels, drawn and reset by `TensorBoardReport` (not in checkpoints); None
        #: for a task without one class per example.
        self.confusion = MulticlassConfusionMatrix(num_classes) if isinstance(self.task, Classification) else None

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            self.check_targets(datamodule)
        self.class_names = self.class_names or self._datamodule_class_names()
        if self.class_ids is None and isinstance(datamodule, IdentifiedClasses):
            self.class_ids = datamodule.class_ids()
        if self.head is None:
            self._size_head()
        if stage == "fit" and self.task.learns_from_targets() and isinstance(datamodule, DescribesTargets):
            # Before training, the task learns what it needs of the training targets (a resumed checkpoint's state,
            # loaded after setup, replaces it); evaluating a trained model keeps its own.
            self.task.prepare(datamodule.training_targets())

    def _size_head(self) -> None:
        datamodule = self.trainer.datamodule
        num_classes = datamodule.num_classes if isinstance(datamodule, CountedClasses) else None
        if num_classes is None:
            raise ConfigError(
                "Expected `model.num_classes` to be set, or a datamodule with a `num_classes` attribute, "
                "but got neither."
            )
        self.hparams.num_classes = num_classes  # saved in checkpoints, so load_from_checkpoint rebuilds the head
        self._build_head(num_classes)

    def check_targets(self, datamodule: Any) -> None:
        """Refuse in one line a datamodule whose targets the task cannot train on (one that does not say what it
        serves serves classes); at setup, and by the `tlkit` command before any run folder exists."""
        kind = datamodule.target_kind if isinstance(datamodule, DescribesTargets) else "class"
        if kind != self.task.target_kind:
            raise ConfigError(
                f"Expected a datamodule that serves {_KIND_WORDS[self.task.target_kind]} for task "
                f"{type(self.task).__name__}, but {type(datamodule).__name__} serves {_KIND_WORDS[kind]}; choose the "
                "task that fits the data (`model.init_args.task`), or data with the task's targets."
            )

    def _datamodule_class_names(self) -> list[str] | None:
        datamodule = self.trainer.datamodule
        return datamodule.class_names() if isinstance(datamodule, NamedClasses) else None

    # ------------------------------------------------------------------------------------- randomness and checkpoints
    def on_train_start(self) -> None:
        self._check_schedule_length()

    def _check_schedule_length(self) -> None:
        """A resumed run with more steps than planned would restart the default cosine schedule's climb: refuse."""
        if self.lr_scheduler is not None or not self.trainer.lr_scheduler_configs:
            return
        scheduler = self.trainer.lr_scheduler_configs[0].scheduler
        if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            return
        planned, total = scheduler.T_max, int(self.trainer.estimated_stepping_batches)
        if planned != max(1, total):
            raise config_error(
                "trainer.max_epochs (or max_steps)",
                f"what the checkpoint's run planned its default cosine schedule for ({planned} steps), since the "
                "learning rate has annealed to zero there and would climb again; start a new run from its weights, "
                "or configure an `lr_scheduler`",
                f"{total} steps",
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Reseed the global RNGs from (run seed, epoch, batch, rank): dropout & co. resume exactly (tlkit.randomness).

        Subclasses that override this hook must call ``super().on_train_batch_start(batch, batch_idx)``.
        """
        if self.run_seed is None:  # fixed at the first step; a resumed run already has the checkpoint's
            self.run_seed = default_seed()
        reseed_for_step(self.run_seed, self.current_epoch, batch_idx, self.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Write the checkpoint's tlkit record (`tlkit.checkpoint.CheckpointInfo`): here and nowhere else."""
        write_info(checkpoint, self.checkpoint_record(checkpoint))

    def checkpoint_record(self, checkpoint: dict[str, Any]) -> CheckpointInfo:
        """What this checkpoint records of the run. A strategy that records more extends it (``dataclasses.replace``
        on ``super().checkpoint_record(checkpoint)``); ``checkpoint`` is Lightning's dict as it will be saved."""
        trainer = self._trainer
        optimizer = trainer.optimizers[0] if trainer is not None and trainer.optimizers else None
        schedulers = trainer.lr_scheduler_configs if trainer is not None else []
        datamodule = trainer.datamodule if trainer is not None else None
        callbacks = trainer.callbacks if trainer is not None else []
        return CheckpointInfo(
            strategy=class_path(type(self)),
            seed=self.run_seed,
            class_names=tuple(self.class_names) if self.class_names else None,
            class_ids=tuple(self.class_ids) if self.class_ids else None,
            # Checked on resume: optimizer state only loads into the optimizer class that wrote it.
            optimizer=class_path(type(optimizer)) if optimizer is not None else None,
            lr_scheduler=class_path(type(schedulers[0].scheduler))
            if schedulers and self.lr_scheduler is not None
            else None,
            # As the datamodule resolved it for this model (export feeds images the same way).
            data_config=dataclasses.asdict(datamodule.resolve_data_config())
            if isinstance(datamodule, ResolvesDataConfig)
            else self._saved_data_config,
            data_source=datamodule.data_source()
            if isinstance(datamodule, RecordsDataSource)
            else self._saved_data_source,
            task=self.task.describe(),
            # The `tlkit` command's resolved config, which a callback of the run carries.
            run_config=next((c.run_config for c in callbacks if isinstance(c, CarriesRunConfig)), None),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before temperature scaling existed carry no temperature: theirs is 1.
        checkpoint.get("state_dict", {}).setdefault("calibration_temperature", torch.ones((), dtype=torch.float64))
        info = info_of(checkpoint)
        if info is None:  # a plain Lightning checkpoint of this module
            return
        self.run_seed = info.seed if info.seed is not None else self.run_seed
        self.class_names = list(info.class_names) if info.class_names else self.class_names
        self.class_ids = list(info.class_ids) if info.class_ids else self.class_ids
        self._saved_data_config = info.data_config
        self._saved_data_source = info.data_source

    @property
    def trained_data_config(self) -> DataConfig | None:
        """The preprocessing the model was trained with, as its datamodule recorded it in the checkpoint this model
        was loaded from (None before a fit, or when the datamodule recorded none)."""
        saved = self._saved_data_config
        return DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}) if saved else None

    def param_groups(self) -> list[dict[str, Any]]:
        """One named group per backbone layer group (input to output), then ``head`` with everything else.

        Each group carries ``lr_scale``; `configure_optimizers` turns it into the group's real ``lr``.
        """
        n = len(self.backbone.layer_groups)
        groups = [
            {"name": g.name, "params": g.parameters, "lr_scale": self.lr_scale(depth=n - g.index)}
            for g in self.backbone.layer_groups
        ]
        backbone_params = {id(p) for p in self.backbone.parameters()}
        rest = [p for p in self.parameters() if id(p) not in backbone_params]
        groups.append({"name": "head", "params": rest, "lr_scale": 1.0})
        return groups

    def lr_scale(self, depth: int) -> float:
        """Learning-rate factor for the layer group ``depth`` places below the head (the head is depth 0)."""
        return 1.0

    def configure_optimizers(self) -> Any:
        groups = self.param_groups()
        scales = [g.pop("lr_scale") for g in groups]
        optimizer = self.optimizer(groups)
        base_lr = optimizer.defaults["lr"]
        # The scale goes into the group's real `lr` (timm's `lr_scale` key is ignored by torch's schedulers).
        for group, scale in zip(optimizer.param_groups, scales):
            group["lr"] = base_lr * scale
        if self.lr_scheduler is None:
            total_steps = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
            interval = "step"
        else:
            scheduler = self.lr_scheduler(optimizer)
            interval = self.scheduler_interval
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # ------------------------------------------------------------------------------------------------------ forward
    def extract_features(self, x: torch.Tensor | Features) -> torch.Tensor:
        """Backbone features; strategies override this to change how the backbone runs (e.g. under no_grad).

        `Features` (served by the datamodule from a `FeatureServing` while the backbone is frozen) pass straight
        through.
        """
        if isinstance(x, Features):
            return x.values
        return self.task.backbone_features(self.backbone, x)

    def forward(self, x: torch.Tensor | Features) -> torch.Tensor:
        """The head's outputs: class logits ((N, classes, H, W) per pixel for segmentation)."""
        return self.head(self.extract_features(x))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task's loss (cross-entropy for classification)."""
        return self.task.loss(logits, targets, self.label_smoothing)

    # -------------------------------------------------------------------------------------------------------- steps
    def regularization(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Penalties added to the training loss, by name (each logged as ``train/<name>``); none by default.

        ``features`` are the batch's backbone features, with their graph.
        """
        return {}

    def _shared_step(self, batch: Any, stage: Stage) -> torch.Tensor:
        x, y = batch
        features = self.extract_features(x)
        logits = self.head(features)
        loss = self.loss(logits, y)
        temperature = self.calibration_temperature
        details = self.detail_metrics[f"{stage}_details"] if f"{stage}_details" in self.detail_metrics else None
        if len(self.metrics[f"{stage}_metrics"]) or details is not None:
            inputs = self.task.metric_inputs(logits, y, temperature)
            self.metrics[f"{stage}_metrics"].update(*inputs)
            if details is not None:
                details.update(*inputs)
        if stage == "val":
            if self.confusion is not None:
                self.confusion.update(logits, y)
            if self.val_calibration is not None:
                self.val_calibration.update(*self.task.calibration_inputs(logits.detach(), y, temperature))
            if (self.temperature_scaling or self.task.fits_on_validation) and not self.trainer.sanity_checking:
                # Gathered from every rank at each step, where every rank enters the collective at the same point
                # (at the epoch's end rank 0's progress bar may already be in Lightning's metric sync).
                outputs = self.all_gather(logits.detach().float()).reshape(-1, logits.shape[-1])
                targets = self.all_gather(y.detach()).reshape(-1, *y.shape[1:])
                self._validation_outputs.append((outputs.cpu(), targets.cpu()))
        if stage == "test" and self.test_ece is not None:
            self.test_ece.update(*self.task.calibration_inputs(logits, y, temperature))
            if self.temperature_scaling:
                self.unscaled_ece.update(*self.task.calibration_inputs(logits, y, torch.ones_like(temperature)))
        self.log_loss(f"{stage}/loss", loss, len(y), prog_bar=True, per_step=stage == "train")
        if stage == "train":
            for name, penalty in self.regularization(features).items():
                self.log_loss(f"train/{name}", penalty, len(y), per_step=True)
                loss = loss + penalty
        return loss

    def log_loss(
        self, name: str, value: torch.Tensor, batch_size: int, prog_bar: bool = False, per_step: bool = False
    ) -> None:
        """Log ``value`` averaged over the epoch and over ranks (synchronised once, at the epoch's end).

        ``per_step`` also logs this rank's value every step as ``<name>_step`` (an all-reduce per step would cost every
        step); the epoch average keeps the plain ``name``, so callbacks can monitor it.
        """
        if per_step:
            self.log(f"{name}_step", value, on_step=True, on_epoch=False, prog_bar=prog_bar, batch_size=batch_size)
        self.log(name, value, on_step=False, on_epoch=True, prog_bar=prog_bar, batch_size=batch_size, sync_dist=True)

    def log_epoch_metrics(self, metrics: MetricCollection, prog_bar: bool = False) -> None:
        """Log ``metrics``, updated step by step during the epoch, for Lightning to compute (synchronised across
        ranks) and reset at the epoch's end.

        The Metric objects are logged, never values computed here: ``compute`` is a collective under DDP, and a
        callback that runs on rank 0 only (the progress bar) asks Lightning for the epoch's synchronised values before
        this hook runs, so a collective entered here would meet a different one on rank 0 and hang both. Lightning
        computes every logged value in one fixed order on every rank, and caches it. Logging once per epoch, not on
        every step, also avoids about 1 ms per metric per step of Lightning's result bookkeeping.
        """
        # Skip metrics nothing updated (e.g. a strategy whose validation uses metrics of its own).
        if any(metric.update_called for metric in metrics.values()):
            self.log_dict(metrics, prog_bar=prog_bar)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def on_train_epoch_end(self) -> None:
        # Under DDP, rank 0's progress bar has just asked for the values the steps logged (a collective per value),
        # before this hook; every rank asks here too, so the epoch's metrics below come after them on every rank.
        # Lightning orders values by when each was first logged: a value first logged in a later epoch (an adaptation
        # loss after source-only reference epochs) sits after the epoch's metrics, and rank 0 would compute it before
        # them, the other ranks after them, and the ranks would hang.
        self.trainer.callback_metrics  # noqa: B018 (computed, and cached, for its collectives)
        self.log_epoch_metrics(self.metrics["train_metrics"])

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_metrics(self.metrics["val_metrics"], prog_bar=True)
        if "val_details" in self.detail_metrics:
            self.log_epoch_metrics(self.detail_metrics["val_details"])
        if self._validation_outputs:
            self._fit_on_validation()

    def _fit_on_validation(self) -> None:
        """Fit the temperature, then the task's decision state (multi-label thresholds), on this validation's outputs
        (every rank's, so each fits the same values, with no collective here); before ModelCheckpoint saves (at
        validation end), so the epoch's checkpoint carries them."""
        outputs = torch.cat([outputs for outputs, _ in self._validation_outputs])
        targets = torch.cat([targets for _, targets in self._validation_outputs])
        self._validation_outputs = []
        if self.temperature_scaling:
            self.calibration_temperature.fill_(self.task.fit_temperature(outputs, targets))
            self.log("val/temperature", self.calibration_temperature.float(), on_epoch=True, rank_zero_only=True)
        self.task.fit_on_validation(outputs, targets, self.calibration_temperature.cpu())

    def on_test_epoch_end(self) -> None:
        self.log_epoch_metrics(self.metrics["test_metrics"], prog_bar=True)
        if "test_details" in self.detail_metrics:
            self.log_epoch_metrics(self.detail_metrics["test_details"])
        if self.test_ece is not None and self.test_ece.update_called:
            self.log("test/ece", self.test_ece, prog_bar=True)
            if self.temperature_scaling:
                self.log("test/ece_unscaled", self.unscaled_ece)

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """What the task predicts, (N, num_classes): class or label probabilities (temperature-scaled when fitted),
        or regression values in the targets' units; ``batch`` is images or (images, labels)."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.task.postprocess(self(x), self.calibration_temperature)


_KIND_WORDS = {
    "class": "one class per example",
    "labels": "label sets",
    "values": "numeric targets",
    "masks": "a class per pixel (masks)",
    "boxes": "boxed objects",
}
