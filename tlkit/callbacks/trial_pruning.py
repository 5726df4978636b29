"""`TrialPruning`: one `tlkit tune` trial's link to its Optuna study, inside the trial's own `tlkit fit`."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch import Callback
from typing_extensions import override

from tlkit.errors import ConfigError

#: Seconds between the liveness signals a tuning worker writes for its running trial, and how long after the last
#: one another worker (or the next start) marks the trial failed: a worker killed with SIGKILL leaves no trial
#: running for ever.
HEARTBEAT_SECONDS, GRACE_SECONDS = 5, 20
#: The package that brings each database URL scheme's driver (SQLAlchemy's defaults for the bare names).
DRIVERS = {
    "postgresql": "psycopg2-binary",
    "postgresql+psycopg2": "psycopg2-binary",
    "postgresql+psycopg": "psycopg[binary]",
    "mysql": "mysqlclient",
    "mysql+mysqldb": "mysqlclient",
    "mysql+pymysql": "PyMySQL",
}


#: Epochs every trial runs before the median pruner may stop it (its warm-up; Optuna's default is 0), and the
#: finished trials it waits for before pruning any.
PRUNER_WARMUP_EPOCHS, PRUNER_STARTUP_TRIALS = 1, 2
PrunerName = Literal["median", "hyperband", "none"]


def make_pruner(name: PrunerName) -> Any:
    """The Optuna pruner of that name. Optuna keeps no pruner in the storage: the search and every trial's run build
    the same one."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"Expected `--pruner` to be 'median', 'hyperband' or 'none', but got {name!r}.")


def _database_storage(url: str, attempts: int = 5) -> Any:
    """An RDBStorage with heartbeats. Workers started at once on a new database race to create its tables (one gets
    a unique-constraint or locked-database error): each tries again, by when the tables exist."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental; they are what finds killed workers
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(url: str) -> Any:
    """The Optuna storage at ``url``: a database URL (``sqlite:///tune.db``; ``postgresql://``, ``mysql+pymysql://``
    for many machines), with heartbeats; or a journal file on a shared filesystem (``journal:<path>``, or a path
    ending in ``.log``). A database whose driver is not installed is one line naming the package."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("journal:") or url.endswith(".log"):
        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    try:
        return _database_storage(url)
    except ImportError:
        scheme = url.split("://", 1)[0]
        package = DRIVERS.get(scheme, f"the driver of {scheme}")
        raise ConfigError(
            f"Expected `--storage` {url!r} to use a database driver that is installed, but {scheme} needs one: "
            f"pip install {package}."
        ) from None
    except Exception as err:  # noqa: BLE001 (SQLAlchemy raises several types for a malformed URL)
        raise ConfigError(
            f"Expected `--storage` to be a database URL (sqlite:///tune.db, postgresql://..., mysql+pymysql://...) or "
            f"journal:<file>, but {url!r} cannot be opened: {err}."
        ) from None


@dataclass(frozen=True)
class TrialLink:
    """What ties a trial's ``tlkit fit`` process to its study: `TrialPruning`'s arguments, handed from the search
    to the run as command-line options (`as_options`).

    Attributes:
        storage: the study's storage URL.
        study_name: the study.
        trial_id: the trial's id in the storage (Optuna's ``Trial(study, trial_id)`` reopens it in the run's
            process), not its number.
        monitor: the metric reported, as logged.
        mode: ``max`` or ``min``.
        pruner: the search's pruner.
    """

    storage: str
    study_name: str
    trial_id: int
    monitor: str
    mode: Literal["max", "min"]
    pruner: PrunerName = "median"

    def as_options(self) -> list[str]:
        """The ``tlkit fit`` options that add `TrialPruning` with these arguments to a run."""
        options = ["--trainer.callbacks+=tlkit.callbacks.TrialPruning"]
        return options + [f"--trainer.callbacks.init_args.{k}={v}" for k, v in dataclasses.asdict(self).items()]


#: The trial's user attributes `TrialPruning` writes and `TrialOutcome` reads: the one place their names are.
RUN_DIR, BEST_VALUE, PRUNED_AT_EPOCH = "run_dir", "best_value", "pruned_at_epoch"


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial's run reported to the study: its run folder, its best value so far, the epoch it was pruned
    at (None while not pruned)."""

    run_dir: str | None
    best_value: float | None
    pruned_at_epoch: int | None

    @classmethod
    def of(cls, trial: Any) -> TrialOutcome:
        """From an Optuna trial (frozen or live) of the study's storage."""
        attrs = trial.user_attrs
        value = attrs.get(BEST_VALUE)
        finite = value is not None and not (isinstance(value, float) and math.isnan(value))
        return cls(attrs.get(RUN_DIR), float(value) if finite else None, attrs.get(PRUNED_AT_EPOCH))


class TrialPruning(Callback):
    """Reports the tuned metric to an Optuna trial at every validation, and stops the run when the study's pruner
    prunes the trial; records the best value and the run folder on the trial. `tlkit tune` adds it to every trial.

    Rank 0 talks to the study's storage; the decision to stop reaches every rank by a broadcast, so all stop after
    the same validation. Optuna's own Lightning callback (optuna-integration) is not used: it needs its own
    `optuna-integration[pytorch_lightning]` release to follow every Lightning release, and this is all tlkit needs.

    Args:
        storage: the study's storage URL (``sqlite:///tune.db``, a PostgreSQL or MySQL URL, or a journal file).
        study_name: the study.
        trial_id: the trial's id in the storage (not its number).
        monitor: the metric reported, as logged (``val/acc``).
        mode: ``max`` or ``min``: which way the best value is kept.
        pruner: the search's pruner (``median``, ``hyperband``, ``none``), built here as the search built it.
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_id: int,
        monitor: str,
        mode: Literal["max", "min"],
        pruner: PrunerName = "median",
    ) -> None:
        self.storage, self.study_name, self.trial_id = storage, study_name, trial_id
        self.monitor, self.mode, self.pruner = monitor, mode, pruner
        self.best: float | None = None
        self._trial: Any = None

    def _open_trial(self) -> Any:
        if self._trial is None:
            import optuna

            storage = open_storage(self.storage)
            study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=make_pruner(self.pruner))
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero and trainer.logger is not None and trainer.log_dir:
            self._open_trial().set_user_attr(RUN_DIR, str(trainer.log_dir))

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor not in trainer.callback_metrics:
            logged = sorted(name for name in trainer.callback_metrics if name not in ("epoch", "step"))
            raise ConfigError(
                f"Expected `--metric` {self.monitor!r} to be a metric the run logs at validation, but it logs: "
                f"{', '.join(logged) or 'none'}."
            )
        if trainer.sanity_checking:
            return
        value = float(trainer.callback_metrics[self.monitor])
        better = max if self.mode == "max" else min
        self.best = value if self.best is None else better(self.best, value)
        prune = False
        if trainer.is_global_zero:
            trial = self._open_trial()
            trial.report(value, step=trainer.current_epoch)
            trial.set_user_attr(BEST_VALUE, self.best)
            prune = bool(trial.should_prune())
            if prune:
                trial.set_user_attr(PRUNED_AT_EPOCH, trainer.current_epoch)
        prune = bool(trainer.strategy.broadcast(torch.tensor(prune), src=0))
        if prune:
            trainer.should_stop = True
