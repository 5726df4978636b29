"""`TLKitCLI`: LightningCLI with tlkit's defaults and checks, for ``tlkit fit|validate|test|predict``.

    tlkit fit --config configs/digits_finetune.yaml
    tlkit fit --config configs/digits_finetune.yaml --ckpt_path last      # continue the latest run of that config
    tlkit test --ckpt_path logs/digits_finetune/version_0/checkpoints/last.ckpt
    tlkit predict --ckpt_path <checkpoint> --data.predict_dir folder/     # writes predictions.csv / .jsonl

Defaults: TensorBoard logs under ``logs/<config name>/version_<n>/`` (``tensorboard --logdir logs``), the learning
rate of every param group logged under its group name, the best checkpoint by ``val/acc`` and ``last.ckpt`` (always
the latest epoch) in the run's ``checkpoints/`` folder. Every checkpoint carries its run's whole config, so
``--ckpt_path`` alone rebuilds the model, optimizer and data it was trained with; a config or options given beside it
override that, and a checkpoint that does not fit them (backbone, classes, optimizer) is a one-line error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import random
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

import tlkit.callbacks  # noqa: F401 (imported so their classes resolve by short name)
import tlkit.datamodules  # noqa: F401
import tlkit.strategies  # noqa: F401
from tlkit.callbacks import GracefulStop, LearningRates, PredictionWriter, ResumableCheckpoint, TensorBoardReport
from tlkit.callbacks.resumable_checkpoint import remove_abandoned_partials
from tlkit.checkpoint import (
    CheckpointInfo,
    check_same_classes,
    check_same_model,
    class_path,
    import_class,
)
from tlkit.cli.messages import (
    TRAINER_HARDWARE_KEYS,
    option_names,
    report,
    summarize_parser_error,
    trainer_option_error,
    wants_traceback,
)
from tlkit.cli.run_folders import Reservation, reserve_for_run
from tlkit.cli.run_resolution import LOG_DIR, SUBCOMMANDS, Invocation, option_values, run_folder_of
from tlkit.engines.run_metrics import DEFAULT_MONITOR
from tlkit.errors import ConfigError, config_error
from tlkit.protocols import NamedClasses
from tlkit.strategies import TransferModule

PLUGIN_GROUP = "tlkit.plugins"
TENSORBOARD_LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"
#: Lightning's ``log_every_n_steps`` default (50) leaves short runs with no LR curve at all, and small-data runs with a
#: handful of points; per-step scalars cost well under a millisecond. Raise it with ``--trainer.log_every_n_steps``.
LOG_EVERY_N_STEPS = 1
DEFAULT_CHECKPOINT_FILENAME = "epoch{epoch:03d}-val_acc{val/acc:.4f}"


class _NoAdvertising(logging.Filter):
    """Drops Lightning's "💡 Tip:" lines, which advertise other services at every run; nothing a user asked for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_lightning_tips() -> None:
    """Install `_NoAdvertising` on the logger Lightning's ``rank_zero_info`` writes to (once)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertising) for f in logger.filters):
        logger.addFilter(_NoAdvertising())


def load_plugins() -> None:
    """Import third-party strategies and datamodules exposed through the ``tlkit.plugins`` entry-point group."""
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        entry_point.load()


class TLKitArgumentParser(LightningArgumentParser):
    """Reports a bad option or value in one line naming it, with the closest valid names (details on request).

    Options are accepted by their full names only: argparse's prefix matching would take ``--trainer.max_epoch`` for
    ``--trainer.max_epochs`` today and refuse it once another option starts the same way.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        #: The command line being parsed (set by `TLKitCLI.init_parser`): an error names the config file it gave.
        self.given_args: list[str] = []

    def error(self, message: str, ex: Exception | None = None):
        if wants_traceback() or not self.exit_on_error:  # jsonargparse catches the raised error internally
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        options = option_names(parser)
        configs = option_values(self.given_args, "--config", "-c")
        line = summarize_parser_error(message, options, configs[-1] if configs else None)
        subcommand = next((s for s in SUBCOMMANDS if f" {s}" in parser.prog), None)
        report(subcommand, line)


class _RunConfigInCheckpoints(Callback):
    """Carries the run's resolved config (YAML) for the model to record in every checkpoint
    (`tlkit.protocols.CarriesRunConfig`), so ``--ckpt_path`` alone can rebuild the run."""

    def __init__(self, text: str) -> None:
        self.run_config = text


class TLKitCLI(LightningCLI):
    """LightningCLI whose ``--model`` is any `TransferModule` and ``--data`` any LightningDataModule."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **overrides) -> None:
        load_plugins()
        # `main` passes sys.argv on explicitly (after resolving it), which LightningCLI would warn about.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        # Intended: frozen groups keep BatchNorm in eval mode (tlkit's freezing), and Lightning's own use of a torch
        # pytree API it has not caught up with yet. Neither is anything a user can act on.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        # Lightning's `all_gather` (validation outputs gathered for temperature scaling and thresholds) still calls
        # the torch API this torch deprecates; and the fitted temperature, logged by rank 0 only, is by construction
        # the same on every rank, so there is nothing for `sync_dist` to accumulate.
        warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
        warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('val/temperature'")
        quiet_lightning_tips()
        self.invocation = Invocation.read(sys.argv[1:] if args is None else args)
        resuming = self.invocation.resume_version is not None
        if resuming:  # continuing in the run's own folder is the point
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        if self.invocation.subcommand != "fit":
            # Testing or predicting from a checkpoint saves none: the run's checkpoint bookkeeping is not needed.
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        logger_args = {"save_dir": LOG_DIR, "name": self.invocation.run_name, "version": self.invocation.resume_version}
        logger = {"class_path": TENSORBOARD_LOGGER, "init_args": logger_args}
        predicting = self.invocation.subcommand == "predict"
        self._reservation: Reservation | None = None
        self._logger_as_configured: Namespace | None = None  # the logger's arguments before the reservation
        self._stored_run_config: dict[str, Any] = {}  # what a fit's checkpoints store (`instantiate_classes`)
        try:
            super().__init__(
                model_class=TransferModule,
                datamodule_class=LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                parser_class=TLKitArgumentParser,
                # predict logs nothing: no run folder, and no config.yaml written into the working directory.
                trainer_defaults={"logger": False if predicting else logger, "log_every_n_steps": LOG_EVERY_N_STEPS},
                save_config_callback=None if predicting else SaveConfigCallback,
                # A continued run keeps the config it started with and writes what it was resumed with beside it.
                save_config_kwargs={
                    "overwrite": True,
                    **({"config_filename": self._config_filename()} if resuming else {}),
                },
                auto_configure_optimizers=False,
                args=self.invocation.args,
                run=run,
                **overrides,
            )
        except BaseException:
            # A run that ends before its first checkpoint (a bad value, a refused checkpoint, SIGTERM) leaves no folder.
            if self._reservation is not None:
                self._reservation.release()
            raise

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        parser.given_args = self.invocation.args
        return parser

    def _config_filename(self) -> str:
        folder = Path(LOG_DIR) / self.invocation.run_name / f"version_{self.invocation.resume_version}"
        n = 1
        while (folder / f"config-resumed-{n}.yaml").exists():
            n += 1
        return f"config-resumed-{n}.yaml"

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":  # predict's own option, beside Trainer.predict's arguments
            parser.add_argument(
                "--explain",
                type=Literal["gradcam", "occlusion"] | None,
                default=None,
                help="Also write a map of why each image got its class (Grad-CAM, or occlusion for any backbone).",
            )
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Added as forced callbacks: always present, configurable as --checkpoint.* and --lr_monitor.*.
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": DEFAULT_MONITOR,
                "checkpoint.mode": "auto",  # which way the monitor is better: the model's task says
                "checkpoint.save_last": True,
                # Metric names contain "/", which ModelCheckpoint would turn into sub-folders.
                "checkpoint.filename": DEFAULT_CHECKPOINT_FILENAME,
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LearningRates, "lr_monitor")
        parser.add_lightning_class_args(TensorBoardReport, "report")

    def _set_seed(self) -> None:
        """Seed as LightningCLI does, quietly (the seed is in the run's config.yaml), and truly at random for ``true``.

        LightningCLI documents ``seed_everything: true`` as a random seed but passes None, which Lightning turns into
        0 with a warning.
        """
        key = f"{self.subcommand}.seed_everything" if self.subcommand else "seed_everything"
        seed = self.config.get(key)
        if seed is False:
            return
        if seed is True or seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", random.SystemRandom().randrange(2**31)))
        seed_everything(int(seed), workers=True, verbose=False)
        self.config[key] = int(seed)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would overwrite the config with the checkpoint's model hyperparameters (and fall back to the
        # default optimizer, which they omit). tlkit's checkpoints carry their whole config instead, read first by
        # `Invocation`, so the user's config and options win; `_check_checkpoint` then checks they fit.
        return

    # ------------------------------------------------------------------------------------------------ subcommands
    def _run_config(self) -> Namespace:
        """The parsed config of this run: the subcommand's, or the whole one without a subcommand (``run=False``)."""
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        self._reservation = self._reserve_log_folder()

    def _reserve_log_folder(self) -> Reservation | None:
        """Reserve the folder tlkit's TensorBoard logger writes into, so that runs started together never share one.

        ``fit`` takes the next ``logs/<name>/version_<n>``; ``test`` and ``validate`` of a checkpoint inside a run
        folder write beside that run, in ``<run>/test_<n>``, where ``tlkit select`` never mistakes them for a fit.
        A logger the user configured with a version of its own (or a continued run's) is left alone.
        """
        logger = self._run_config()["trainer"].get("logger")
        if not isinstance(logger, Namespace) or logger.class_path != TENSORBOARD_LOGGER:
            return None
        init_args = logger.init_args
        if init_args.version is not None or init_args.sub_dir is not None:
            return None
        self._logger_as_configured = Namespace(**vars(init_args))
        run = run_folder_of(self.invocation.ckpt_path)
        if self.subcommand in ("test", "validate") and run is not None:
            reservation = reserve_for_run(run, f"{self.subcommand}_")
            init_args.save_dir, init_args.name = str(run.parent.parent), run.parent.name
            init_args.version, init_args.sub_dir = run.name, reservation.folder.name
            # No placeholder hp_metric of -1: the HParams tab compares fits (TensorBoardReport logs their best).
            init_args.default_hp_metric = False
        else:
            reservation = reserve_for_run(Path(init_args.save_dir) / (init_args.name or ""))
            init_args.version = reservation.number
        return reservation

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # The saved config.yaml (and the checkpoints' copy) keep the logger as the user configured it: a run started
        # again from them reserves a folder of its own instead of writing into this one.
        if self._logger_as_configured is not None:
            self._run_config()["trainer"]["logger"].init_args = self._logger_as_configured
        if self.subcommand in ("fit", None):
            # Every checkpoint of a fit carries its run's config, whether `tlkit fit` runs it or Python code does
            # (`run=False`, as `make demo` does, where no before_fit runs): `--ckpt_path` alone rebuilds the run.
            self._stored_run_config = self._resolved_run_config()
            self.trainer.callbacks.append(_RunConfigInCheckpoints(yaml.safe_dump(self._stored_run_config)))

    def _resolved_run_config(self) -> dict[str, Any]:
        """This run's resolved config, as every checkpoint stores it (without ``ckpt_path``)."""
        config = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False, format="yaml"))
        run_config = config.get(self.subcommand, {}) if self.subcommand else config
        run_config.pop("ckpt_path", None)
        return run_config

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's Trainer; an accelerator, strategy, precision or devices this machine cannot run is one line
        naming the option (Lightning raises a traceback from deep inside its connectors)."""
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, RuntimeError) as err:
            trainer_config = self._run_config()["trainer"]
            raise trainer_option_error(str(err), {k: trainer_config.get(k) for k in TRAINER_HARDWARE_KEYS}) from err
        # SIGTERM (a scheduler's preemption, `kill`) stops every rank at one step; Lightning's own handler can hang.
        trainer.callbacks.append(GracefulStop())
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        log_dir = self._log_dir()
        before = _folder_snapshot(log_dir) if log_dir is not None and self.invocation.resume_version is not None else {}
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if before:  # a continued run that failed before saving anything leaves its folder as it found it
                _restore_folder(log_dir, before)
            raise

    def _log_dir(self) -> Path | None:
        logger = self.trainer.logger
        return Path(logger.log_dir) if logger is not None and getattr(logger, "log_dir", None) else None

    def _check_data(self) -> None:
        """Load and check the data now, so a bad folder, or data whose targets the task cannot train on, fails before
        any run folder or log line appears."""
        self.model.check_targets(self.datamodule)
        if isinstance(self.datamodule, NamedClasses):
            self.datamodule.class_names()

    def before_fit(self) -> None:
        self._check_data()
        self._check_optimizer_arguments()
        self._check_checkpoint("fit")
        self._select_checkpoint_metric()
        if isinstance(self.trainer.logger, TensorBoardLogger) and self.trainer.is_global_zero:
            # The resolved config in TensorBoard's Text tab (indented: shown as code, not as Markdown).
            text = yaml.safe_dump(self._stored_run_config, sort_keys=False)
            indented = "\n".join("    " + line for line in text.splitlines())
            self.trainer.logger.experiment.add_text("config", indented, 0)
        log_dir = self._log_dir()
        if log_dir is not None and self.trainer.is_global_zero:
            # A run of this config killed while saving left a hidden half-written checkpoint: no use to anyone.
            for path in remove_abandoned_partials(log_dir.parent):
                rank_zero_info(f"tlkit: removed {path}, a checkpoint a killed run left half-written")
        if log_dir is not None:
            verb = "continuing" if self.invocation.resume_version is not None else "logs in"
            rank_zero_info(f"tlkit: TensorBoard {verb} {log_dir}  (view with: tensorboard --logdir {LOG_DIR})")

    def before_validate(self) -> None:
        self._check_checkpoint("validate")
        self._select_checkpoint_metric()  # the checkpoint callback's state in the file is keyed by its monitor

    def before_test(self) -> None:
        self._check_checkpoint("test")
        self._select_checkpoint_metric()  # the checkpoint callback's state in the file is keyed by its monitor

    def before_predict(self) -> None:
        self._check_checkpoint("predict")
        self._select_checkpoint_metric()
        # Beside the checkpoint: in its run folder (<run>/predictions/), or the checkpoint's own folder.
        ckpt = self.invocation.ckpt_path
        run = run_folder_of(ckpt)
        output_dir = (run if run is not None else ckpt.parent if ckpt is not None else Path.cwd()) / "predictions"
        name = f"predictions-{ckpt.stem}" if ckpt is not None else "predictions"
        explain = self.config["predict"].get("explain")
        if explain is not None:
            from tlkit.functional.attribution import check_explainable

            check_explainable(self.model, explain)
        self.trainer.callbacks.append(PredictionWriter(str(output_dir), name=name, explain=explain))

    def _check_optimizer_arguments(self) -> None:
        """Build the configured optimizer and scheduler once on a stand-in parameter, so that a value they refuse (a
        negative learning rate) is one line now rather than a traceback when training starts."""
        probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
        for key, build, argument in (
            ("model.optimizer", self.model.optimizer, [torch.nn.Parameter(torch.zeros(1))]),
            ("model.lr_scheduler", self.model.lr_scheduler, probe),
        ):
            if build is None:
                continue
            try:
                build(argument)
            except (ValueError, TypeError) as err:
                raise ConfigError(f"Expected `{key}` to have arguments it accepts, but it says: {err}.") from err

    def _select_checkpoint_metric(self) -> None:
        """Checkpoint on the strategy's own metric (the task's; ``val/safe_im`` for domain adaptation) unless the user
        chose one, whose direction (``mode: auto``) the model gives."""
        callback = self.trainer.checkpoint_callback
        if not isinstance(callback, ResumableCheckpoint):
            return
        if callback.monitor == DEFAULT_MONITOR:
            metric, mode = self.model.checkpoint_monitor
            if metric != DEFAULT_MONITOR:
                callback.use_monitor(metric, mode)
            else:  # the task's metric is the default one: its direction, and the file names as configured
                callback.use_mode(mode)
            return
        callback.resolve_mode(self.model)  # now, before any run folder: a monitor without a direction is one line
        if callback.filename == DEFAULT_CHECKPOINT_FILENAME:  # files named after the metric they were chosen by
            callback.use_monitor(callback.monitor, callback.mode)

    # --------------------------------------------------------------------------------------- checkpoint checking
    def _check_checkpoint(self, subcommand: str) -> None:
        """The checkpoint must fit the config it is used with: strategy, backbone, head, classes, optimizer."""
        path = self.invocation.ckpt_path
        if path is None:
            return
        saved, hparams = self.invocation.checkpoint_info, self.invocation.checkpoint_hparams
        where = f"checkpoint {path}"
        strategy = class_path(type(self.model))
        if saved is not None and saved.strategy and saved.strategy != strategy:
            raise config_error("model", f"{saved.strategy!r} as in the {where}", strategy)
        check_same_model(hparams, dict(self.model.hparams), where)
        self._check_classes(subcommand, saved.class_names if saved else None, hparams.get("num_classes"), where)
        if subcommand == "fit" and saved is not None:
            self._check_optimizer(saved, where)

    def _check_classes(self, subcommand: str, saved: tuple[str, ...] | None, num_classes: int | None, where: str):
        data_args = self.config[subcommand]["data"].get("init_args") or {}
        if subcommand == "predict" and data_args.get("predict_dir"):
            return  # new images have no labels to compare
        names = _data_class_names(self.datamodule)
        if names is None:
            return
        check_same_classes(saved, names, where)
        if saved is None and num_classes is not None and num_classes != len(names):
            raise config_error("the data's number of classes", f"{num_classes} as in the {where}", len(names))

    def _check_optimizer(self, saved: CheckpointInfo, where: str) -> None:
        init_args = self.config["fit"]["model"].get("init_args")
        for key, stored in (("optimizer", saved.optimizer), ("lr_scheduler", saved.lr_scheduler)):
            configured = _class_path(init_args.get(key) if init_args is not None else None)
            if key == "optimizer" and configured is None:
                configured = "torch.optim.adamw.AdamW"  # TransferModule's default
            if stored is not None and configured is not None and stored != configured:
                raise config_error(
                    f"model.{key}",
                    f"{stored} as in the {where} (its state cannot be loaded into another class); "
                    "start a new run to change it",
                    configured,
                )


def _class_path(value: Any) -> str | None:
    """The full class path of a configured optimizer or scheduler (short names resolved), or None."""
    configured = getattr(value, "class_path", None) or (value.get("class_path") if isinstance(value, dict) else None)
    if not configured:
        return None
    cls = import_class(configured)
    return configured if cls is None else class_path(cls)


def _data_class_names(datamodule: Any) -> list[str] | None:
    return list(datamodule.class_names()) if isinstance(datamodule, NamedClasses) else None


def _folder_snapshot(folder: Path) -> dict[Path, float]:
    """Every file under ``folder`` with its modification time."""
    return {p: p.stat().st_mtime for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def _restore_folder(folder: Path, before: dict[Path, float]) -> None:
    """Remove the files a failed continuation added to its run folder (config-resumed-<n>.yaml, an event file), unless
    it saved a checkpoint: then what it wrote is part of the run."""
    now = _folder_snapshot(folder)
    if any(p.suffix == ".ckpt" and before.get(p) != mtime for p, mtime in now.items()):
        return
    for path in now.keys() - before.keys():
        path.unlink(missing_ok=True)
