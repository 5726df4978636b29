"""Hyperparameter search over any key of a run config with Optuna: each trial an ordinary `tlkit fit` run (its own
run folder, config.yaml and checkpoints), one study shared by every worker that names the same storage.

A search space is YAML, one entry per config key (dotted, as on the command line):

    model.init_args.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    model.init_args.lr_decay: {low: 0.5, high: 1.0}
    trainer.max_epochs: {type: int, low: 5, high: 20}
    model.init_args.head: {choices: [linear, mlp]}

Each trial runs as its own ``tlkit fit`` process (so a multi-device trial launches its ranks as any run does), with
`TrialPruning` reporting the metric to the study at every validation. The study counts finished trials (complete or
pruned): workers started at once, or started again after one was killed, stop when it has ``n_trials``.

Examples:
    >>> keys = flat_keys(resolved_run_config("configs/digits_finetune.yaml", []))  # tlkit.cli.tune
    >>> result = tune("configs/digits_finetune.yaml", "space.yaml", 20, "val/acc", config_keys=keys)
    >>> result.best.params
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from tlkit.callbacks.trial_pruning import PrunerName, TrialLink, TrialOutcome, make_pruner, open_storage
from tlkit.engines.run_metrics import RunMetrics
from tlkit.errors import USER_ERROR_STATUS, ConfigError, closest, config_error, reported_error
from tlkit.tasks import Mode

Direction = Literal["auto", "max", "min"]
SamplerName = Literal["tpe", "random"]
KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Parameter:
    """One searched config key and its distribution."""

    key: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)


def read_space(path: str | os.PathLike, config_keys: set[str]) -> list[Parameter]:
    """The search space in ``path``, each key checked against ``config_keys`` (the run config's, dotted)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise config_error("space", "a YAML file of config keys and their ranges", str(file))
    entries = yaml.safe_load(file.read_text()) or {}
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"Expected {file} to map config keys to ranges ({{low: ..., high: ...}}), but it maps none.")
    parameters = []
    for key, spec in entries.items():
        where = f"{file}: {key}"
        if key not in config_keys:
            near = closest(key, sorted(config_keys))
            hint = f" Closest: {', '.join(near)}." if near else ""
            raise ConfigError(f"Expected every key of {file} to be a key of the run config, but {key!r} is not.{hint}")
        parameters.append(_parameter(key, spec, where))
    return parameters


def _parameter(key: str, spec: Any, where: str) -> Parameter:
    if not isinstance(spec, dict):
        raise ConfigError(
            f"Expected {where} to be a range {{low: ..., high: ...}} or {{choices: [...]}}, but got {spec!r}."
        )
    kind = spec.get("type") or ("categorical" if "choices" in spec else _numeric_kind(spec))
    if kind not in KINDS:
        raise ConfigError(f"Expected {where} `type` to be one of {', '.join(KINDS)}, but got {kind!r}.")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"Expected {where} `choices` to be a non-empty list, but got {choices!r}.")
        return Parameter(key, "categorical", choices=tuple(choices))
    low, high, log = spec.get("low"), spec.get("high"), bool(spec.get("log", False))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"Expected {where} to have numbers `low` and `high`, but got low={low!r}, high={high!r}.")
    if not low < high:
        raise ConfigError(f"Expected {where} to be a range with low < high, but got an empty one: [{low}, {high}].")
    if log and low <= 0:
        raise ConfigError(f"Expected {where} `low` to be positive for a log-scale range, but got {low}.")
    return Parameter(key, kind, float(low), float(high), log)


def _numeric_kind(spec: dict) -> str:
    ints = all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool) for k in ("low", "high"))
    return "int" if ints and not spec.get("log") else "float"


def flat_keys(config: Any, prefix: str = "") -> set[str]:
    """Every dotted key of a nested config (``model.init_args.lr_decay``), inner and leaf."""
    keys = set()
    if isinstance(config, dict):
        for name, value in config.items():
            key = f"{prefix}{name}"
            keys.add(key)
            keys |= flat_keys(value, key + ".")
    return keys


#: ``--metric``'s default: the run config's checkpoint metric (the task's, or the strategy's).
AUTO_METRIC = "auto"


def resolve_objective(metric: str, direction: Direction, metrics: RunMetrics | None) -> tuple[str, Mode]:
    """(metric, direction) a study optimises: ``auto`` metric is the run config's checkpoint metric, ``auto``
    direction the one its strategy and task give the metric (`tlkit.engines.run_metrics`); a metric they give no
    direction needs ``--direction``."""
    if metric == AUTO_METRIC:
        if metrics is None:
            raise config_error("metric", "a logged metric (no run config was given to choose one)", metric)
        metric = metrics.monitor[0]
    if direction != "auto":
        return metric, direction
    mode = metrics.direction(metric) if metrics is not None else None
    if mode is None:
        raise ConfigError(
            f"Expected `--direction` max or min for {metric}: the run config's task and strategy do not say which way "
            "it is better."
        )
    return metric, mode


def trial_sampler(name: SamplerName, seed: int, trial_number: int) -> Any:
    """The sampler that draws trial ``trial_number``'s values: seeded from ``seed`` and the trial's number, which the
    storage gives each trial once, so workers sharing a study never draw the same values (one sampler seed in every
    process would: Optuna issues 4714, 1547), while one worker's study is reproducible. TPE counts the trials other
    workers are running as if they had scored the worst (``constant_liar``), so it does not propose beside them."""
    import optuna

    trial_seed = int(np.random.SeedSequence([seed, trial_number]).generate_state(1)[0])
    if name == "random":
        return optuna.samplers.RandomSampler(seed=trial_seed)
    with warnings.catch_warnings():  # constant_liar is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=trial_seed, constant_liar=True)


@dataclass
class TrialRecord:
    """One trial as the results table shows it."""

    number: int
    params: dict[str, Any]
    value: float | None
    state: str
    seconds: float | None
    run_dir: str | None
    #: Validations the trial ran (its epochs, when it validates every epoch): fewer than planned when pruned.
    epochs: int = 0


@dataclass
class TuneResult:
    """What a `tune` call ends with: every trial of the study and the best one (None while none finished), and the
    metric they were scored on (``auto`` resolved)."""

    trials: list[TrialRecord]
    best: TrialRecord | None
    out_dir: Path
    metric: str


def tune(
    config: str,
    space: str,
    n_trials: int,
    metric: str = AUTO_METRIC,
    storage: str | None = None,
    study_name: str | None = None,
    direction: Direction = "auto",
    pruner: PrunerName = "median",
    timeout: float | None = None,
    seed: int = 0,
    sampler: SamplerName = "tpe",
    extra_args: Sequence[str] = (),
    out_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    config_keys: Collection[str] = (),
    metrics: RunMetrics | None = None,
) -> TuneResult:
    """Search ``space`` for the config of ``config`` that scores best on ``metric``, until the study (shared with
    every worker on ``storage``) has ``n_trials`` finished trials or ``timeout`` seconds pass.

    ``config_keys`` are the run config's keys, defaults included, that the space may name (`tlkit.cli.tune`
    resolves them as ``tlkit fit --print_config`` would); every key of the space must be one of them. ``metrics``
    (`tlkit.engines.run_metrics.run_metrics_of_config` of that config) give the ``auto`` metric and direction."""
    import optuna

    if n_trials < 1:
        raise config_error("n_trials", "an integer >= 1", n_trials)
    if sampler not in ("tpe", "random"):
        raise config_error("sampler", "'tpe' or 'random'", sampler)
    if pruner not in ("median", "hyperband", "none"):
        raise config_error("pruner", "'median', 'hyperband' or 'none'", pruner)
    if direction not in ("auto", "max", "min"):
        raise config_error("direction", "'auto', 'max' or 'min'", direction)
    parameters = read_space(space, set(config_keys))
    metric, mode = resolve_objective(metric, direction, metrics)
    name = study_name or Path(config).stem
    out = Path(out_dir) if out_dir is not None else Path("tune") / name
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{out / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is said by `progress`
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(url),
        direction="maximize" if mode == "max" else "minimize",
        sampler=trial_sampler(sampler, seed, 0),  # replaced for each trial (`objective`)
        pruner=make_pruner(pruner),
        load_if_exists=True,
    )
    say = progress or (lambda line: None)
    deadline = None if timeout is None else time.monotonic() + timeout

    def objective(trial: Any) -> float:
        if _finished(study, running_before=trial.number) >= n_trials:
            # Another worker asked in the same moment: this trial would be one too many, and is not run.
            trial.set_user_attr("surplus", True)
            raise _Surplus
        study.sampler = trial_sampler(sampler, seed, trial.number)  # the trial's values are drawn when suggested
        values = {p.key: p.suggest(trial) for p in parameters}
        say(f"trial {trial.number}: {', '.join(f'{k}={v}' for k, v in values.items())}")
        state, value = _run_trial(config, extra_args, values, url, name, trial, metric, mode, pruner)
        say(f"trial {trial.number}: {state}" + (f", {metric} = {value:.4f}" if value is not None else ""))
        if state == "pruned":
            raise optuna.TrialPruned
        if state == "failed":
            raise _TrialFailed
        return value

    # One trial per call: Optuna's loop sends the running trial's heartbeats (so a killed worker's trial is marked
    # failed by the next worker to look) and marks stale trials failed before each new one.
    while deadline is None or time.monotonic() < deadline:
        with warnings.catch_warnings():  # marked experimental, as heartbeats are
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a killed worker's trial: failed, so it is run again
        if _finished(study, running_before=math.inf) >= n_trials:
            break  # the study has its trials, or the last ones are running in other workers
        study.optimize(objective, n_trials=1, catch=(_Surplus, _TrialFailed))
        if study.get_trials(deepcopy=False)[-1].user_attrs.get("surplus"):
            break
    return _result(_fresh(name, url), out, mode, metric)


def _fresh(study_name: str, url: str) -> Any:
    """The study as its storage holds it now. A worker's own storage object caches the trials it runs, and would not
    see what each trial's `tlkit fit` process reported to them (intermediate values, attributes)."""
    import optuna

    return optuna.load_study(study_name=study_name, storage=open_storage(url))


class _Surplus(Exception):
    """A trial asked for when the study already had its trials (recorded as failed, never run)."""


class _TrialFailed(Exception):
    """A trial's run ended without a result (recorded as failed; the study goes on)."""


def _finished(study: Any, running_before: float | None = None) -> int:
    """Trials that count toward ``n_trials``: complete and pruned, plus (``running_before``) those running with a
    lower number (``math.inf``: all running), which other workers are running."""
    import optuna

    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (states.COMPLETE, states.PRUNED) for t in trials)
    if running_before is not None:
        done += sum(t.state == states.RUNNING and t.number < running_before for t in trials)
    return done


def _run_trial(
    config: str,
    extra: Sequence[str],
    values: dict[str, Any],
    storage: str,
    study_name: str,
    trial: Any,
    metric: str,
    mode: str,
    pruner: PrunerName,
) -> tuple[str, float | None]:
    """One trial as a ``tlkit fit`` process: (``complete``, ``pruned`` or ``failed``, its best value of ``metric``).
    A user error of the run (the same in every trial: a metric nothing logs) stops the search in one line."""
    overrides = [f"--{key}={_as_argument(value)}" for key, value in values.items()]
    # The storage's id of the trial has no public accessor in Optuna.
    link = TrialLink(storage, study_name, trial._trial_id, metric, mode, pruner)
    started = time.monotonic()
    command = [*_tlkit_command(), "fit", "--config", config, *extra, *overrides, *link.as_options()]
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trial.set_user_attr("seconds", time.monotonic() - started)
    if result.returncode == USER_ERROR_STATUS:  # a user error of the run config or tuning options: every trial's
        problem = reported_error(result.stderr) or result.stderr.strip()[-500:]
        raise ConfigError(f"Trial {trial.number} ({', '.join(overrides)}): {problem}")
    if result.returncode != 0:
        last = [line for line in result.stderr.splitlines() if line.strip()]
        trial.set_user_attr("error", last[-1] if last else f"exit status {result.returncode}")
        return "failed", None
    reported = next(t for t in _fresh(study_name, storage).get_trials(deepcopy=False) if t.number == trial.number)
    outcome = TrialOutcome.of(reported)
    if outcome.pruned_at_epoch is not None:
        return "pruned", outcome.best_value
    if outcome.best_value is None:
        return "failed", None
    return "complete", outcome.best_value


def _as_argument(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def _tlkit_command() -> list[str]:
    """How to start ``tlkit`` in a child process: the console script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("tlkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tlkit.cli"]


def _result(study: Any, out: Path, mode: str, metric: str) -> TuneResult:
    import optuna

    records = []
    for t in study.get_trials(deepcopy=False):
        outcome = TrialOutcome.of(t)
        value = t.value if t.state == optuna.trial.TrialState.COMPLETE else outcome.best_value
        records.append(
            TrialRecord(
                t.number,
                dict(t.params),
                value,
                t.state.name.lower(),
                t.user_attrs.get("seconds"),
                outcome.run_dir,
                len(t.intermediate_values),
            )
        )
    complete = [r for r in records if r.state == "complete" and r.value is not None]
    best = (max if mode == "max" else min)(complete, key=lambda r: r.value) if complete else None
    if best is not None and best.run_dir and (Path(best.run_dir) / "config.yaml").is_file():
        (out / "best.yaml").write_text(reproducing_config((Path(best.run_dir) / "config.yaml").read_text()))
    (out / "trials.json").write_text(json.dumps([r.__dict__ for r in records], indent=2, default=str) + "\n")
    _write_hparams(records, out / "hparams", metric)
    _write_plots(study, out)
    return TuneResult(records, best, out, metric)


def _write_hparams(records: Sequence[TrialRecord], folder: Path, metric: str) -> None:
    """Each finished trial's parameters and result for TensorBoard's HParams tab (``tensorboard --logdir
    tune/<study>/hparams``), written once by whichever worker gets to it first."""
    from torch.utils.tensorboard import SummaryWriter

    for record in records:
        if record.state not in ("complete", "pruned") or record.value is None:
            continue
        trial_dir = folder / f"trial_{record.number}"
        try:
            trial_dir.mkdir(parents=True)
        except FileExistsError:
            continue
        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in record.params.items()}
        with SummaryWriter(str(trial_dir)) as writer:
            writer.add_hparams(params, {metric: record.value}, run_name=".")


def _write_plots(study: Any, out: Path) -> None:
    """Optuna's optimisation history and parameter importances as self-contained HTML files."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return
    try:
        import plotly  # noqa: F401 (Optuna's plots draw with it)
    except ImportError:
        return
    optuna.visualization.plot_optimization_history(study).write_html(out / "history.html")
    if len(complete) >= 2 and len(complete[0].params) >= 2:
        with contextlib.suppress(ValueError, RuntimeError):  # too little variation to attribute importance
            optuna.visualization.plot_param_importances(study).write_html(out / "importance.html")


def reproducing_config(run_config: str) -> str:
    """A trial's resolved config without its link to the study: ``tlkit fit --config best.yaml`` reruns the trial."""
    config = yaml.safe_load(run_config)
    trainer = config.get("trainer") or {}
    callbacks = [c for c in trainer.get("callbacks") or [] if "TrialPruning" not in str(c.get("class_path", ""))]
    trainer["callbacks"] = callbacks or None
    header = "# The best trial's config (tlkit tune); rerun it with: tlkit fit --config <this file>\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def markdown_table(result: TuneResult, metric: str) -> str:
    keys = sorted({k for r in result.trials for k in r.params})
    header = ["trial", *keys, metric, "state", "seconds", "run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in result.trials:
        star = " *" if result.best is not None and r.number == result.best.number else ""
        cells = [f"{r.number}{star}", *(_cell(r.params.get(k)) for k in keys)]
        cells += [
            "-" if r.value is None else f"{r.value:.4f}",
            r.state,
            "-" if r.seconds is None else f"{r.seconds:.0f}",
        ]
        cells.append(r.run_dir or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
