"""The ``tlkit`` command: LightningCLI with tlkit's defaults.

    tlkit fit --config configs/digits_finetune.yaml
    tlkit fit --model FineTuning --model.backbone resnet50 --data ImageFolderDataModule --data.data_dir data/flowers
    tlkit fit --config configs/digits_finetune.yaml --print_config

Defaults: TensorBoard logs under ``logs/<model class>/version_<n>/`` (``tensorboard --logdir logs``), the learning
rate of every param group logged under its group name, and the best checkpoint by ``val/acc`` kept in the run's
``checkpoints/`` folder.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

import tlkit.callbacks  # noqa: F401 (imported so their classes resolve by short name)
import tlkit.datamodules  # noqa: F401
import tlkit.strategies  # noqa: F401
from tlkit.strategies import TransferModule

PLUGIN_GROUP = "tlkit.plugins"
LOG_DIR = "logs"
DEFAULT_MONITOR = "val/acc"


def load_plugins() -> None:
    """Import third-party strategies and datamodules exposed through the ``tlkit.plugins`` entry-point group."""
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        entry_point.load()


class TLKitCLI(LightningCLI):
    """LightningCLI whose ``--model`` is any `TransferModule` and ``--data`` any LightningDataModule."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **overrides) -> None:
        load_plugins()
        super().__init__(
            model_class=TransferModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults={
                "logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": LOG_DIR, "name": "tlkit"},
                },
            },
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=args,
            run=run,
            **overrides,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Added as forced callbacks: always present, configurable as --checkpoint.* and --lr_monitor.*.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": DEFAULT_MONITOR,
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                # Metric names contain "/", which ModelCheckpoint would turn into sub-folders.
                "checkpoint.filename": "epoch{epoch:03d}-val_acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})

    def before_fit(self) -> None:
        self._select_checkpoint_metric()
        logger = self.trainer.logger
        if logger is not None and getattr(logger, "log_dir", None):
            rank_zero_info(f"tlkit: TensorBoard logs in {logger.log_dir}  (view with: tensorboard --logdir {LOG_DIR})")

    def _select_checkpoint_metric(self) -> None:
        """Checkpoint on the strategy's own metric (``val/im`` for domain adaptation) unless the user chose one."""
        callback = self.trainer.checkpoint_callback
        metric, mode = getattr(self.model, "checkpoint_monitor", (DEFAULT_MONITOR, "max"))
        if callback is None or callback.monitor != DEFAULT_MONITOR or metric == DEFAULT_MONITOR:
            return
        callback.monitor, callback.mode = metric, mode
        callback.kth_value = torch.tensor(-torch.inf if mode == "max" else torch.inf)
        callback.filename = f"epoch{{epoch:03d}}-{metric.replace('/', '_')}{{{metric}:.4f}}"


def main(args: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    TLKitCLI(args=args)


if __name__ == "__main__":
    main()
