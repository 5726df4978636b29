"""`tlkit tune`: an Optuna search over any config key, each trial an ordinary `tlkit fit` run, one study shared by
every worker on the same storage; its bad input in one line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from tests._console import REPO, console_env, run_here, start_tlkit, tlkit
from tlkit.callbacks import TrialPruning, trial_pruning
from tlkit.cli.tune import resolved_run_config
from tlkit.cli.tune import run as tune_command
from tlkit.engines.run_metrics import run_metrics_of_config
from tlkit.engines.tuning import flat_keys, read_space
from tlkit.engines.tuning import tune as tune_engine
from tlkit.errors import ConfigError

CONFIG = str(REPO / "configs" / "digits_finetune.yaml")
TINY = [
    "--model.init_args.backbone=test_resnet",
    "--model.init_args.weights=null",
    "--data.init_args.image_size=32",
    "--data.init_args.labels_per_class=3",
    "--trainer.max_epochs=1",
    "--trainer.limit_val_batches=2",  # a trial's cost is its process start; its training is kept to the minimum
    "--trainer.enable_progress_bar=false",
]
SPACE = {
    "model.init_args.optimizer.init_args.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "model.init_args.head": {"choices": ["linear", "mlp"]},
}


def tune(*args, extra_args=TINY, **kwargs):
    """`tlkit.engines.tuning.tune` with the run config's keys and metrics resolved as the command resolves them."""
    run_config = resolved_run_config(CONFIG, extra_args)
    metrics = run_metrics_of_config(run_config)
    return tune_engine(*args, extra_args=extra_args, config_keys=flat_keys(run_config), metrics=metrics, **kwargs)


def write_space(folder: Path, space: dict = SPACE) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.fixture
def console(monkeypatch, tmp_path):
    """This process as a user's shell: each trial's `tlkit fit` inherits it."""
    for name, value in console_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_each_trial_is_a_run_and_best_yaml_reruns_the_best_one(console, capsys):
    result = tune_command(["--config", CONFIG, "--space", str(write_space(console)), "--n_trials", "2", "--", *TINY])
    assert [t.state for t in result.trials] == ["complete", "complete"]
    assert [t.epochs for t in result.trials] == [1, 1]  # what each trial's run reported, read back by the worker
    runs = [Path(t.run_dir) for t in result.trials]
    assert len(set(runs)) == 2 and all((r / "checkpoints" / "last.ckpt").is_file() for r in runs)
    for trial, folder in zip(result.trials, runs):  # the sampled values are what each run ran with
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == pytest.approx(
            trial.params["model.init_args.optimizer.init_args.lr"]
        )
        assert config["model"]["init_args"]["head"] == trial.params["model.init_args.head"]
    printed = capsys.readouterr().out
    assert "| trial |" in printed and f"Best: trial {result.best.number}" in printed
    assert len(json.loads((result.out_dir / "trials.json").read_text())) == 2
    assert (result.out_dir / "history.html").stat().st_size > 10_000  # Optuna's plot, self-contained
    assert sorted(p.name for p in (result.out_dir / "hparams").iterdir()) == ["trial_0", "trial_1"]  # HParams tab
    run_here(["fit", "--config", str(result.out_dir / "best.yaml")])
    again = sorted((console / "logs" / "digits_finetune").iterdir())[-1] / "checkpoints" / "last.ckpt"
    best = Path(result.best.run_dir) / "checkpoints" / "last.ckpt"
    expected, got = (torch.load(p, weights_only=True)["state_dict"] for p in (best, again))
    assert all(torch.equal(expected[k], got[k]) for k in expected)  # best.yaml is the best trial, bitwise


def test_workers_started_at_once_share_one_study_and_run_each_trial_once(console):
    space, storage = write_space(console), f"sqlite:///{console / 'shared.db'}"
    command = ["tune", "--config", CONFIG, "--space", str(space), "--n_trials", "2", "--storage", storage]
    command += ["--study_name", "shared", "--", *TINY]
    workers = [start_tlkit(command, console) for _ in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr[-2000:]
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 2 and len(trials) == 2  # none lost, none run twice, no surplus asked
    # Each trial's values drawn with its own seed: workers started together never run the same parameters.
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 2
    assert len({t.user_attrs["run_dir"] for t in finished}) == 2
    assert sorted(p.name for p in (console / "logs" / "digits_finetune").iterdir()) == ["version_0", "version_1"]


def test_a_killed_workers_trial_is_marked_failed_and_the_study_goes_on(console, monkeypatch):
    monkeypatch.setattr(trial_pruning, "GRACE_SECONDS", 1)
    storage = f"sqlite:///{console / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=trial_pruning.open_storage(storage), direction="maximize")
    orphan = study.ask()  # a worker's trial, running when the worker was killed: its heartbeat stops
    study._storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)  # past the grace period (SQLite's clock counts whole seconds)
    result = tune(CONFIG, str(write_space(console)), 1, "val/acc", storage=storage, study_name="s")
    assert [t.state for t in result.trials] == ["fail", "complete"]


def test_the_shipped_search_space_names_keys_of_its_config():
    space = REPO / "configs" / "spaces" / "digits_finetune.yaml"
    parameters = read_space(space, flat_keys(resolved_run_config(CONFIG, [])))
    assert {p.key for p in parameters} >= {"model.init_args.optimizer.init_args.lr", "model.init_args.lr_decay"}


def test_a_domain_adaptation_search_on_a_label_free_validator_maximises_it(console):
    """The shipped MCC space on its config, searched on ``val/safe_im``: the space names keys of the config, the study
    maximises the validator, and a trial's value is the best ``val/safe_im`` its run validated (its best checkpoint)."""
    config = str(REPO / "configs" / "domain_adaptation" / "mnist_digits_mcc.yaml")
    space = str(REPO / "configs" / "spaces" / "mnist_digits_mcc.yaml")
    tiny = [*TINY[:3], "--data.init_args.iters_per_epoch=2", "--trainer.max_epochs=2", *TINY[5:]]
    run_config = resolved_run_config(config, tiny)
    keys = flat_keys(run_config)
    assert {p.key for p in read_space(space, keys)} == {
        "model.init_args.trade_off",
        "model.init_args.optimizer.init_args.lr",
    }
    result = tune_engine(config, space, 1, extra_args=tiny, config_keys=keys, metrics=run_metrics_of_config(run_config))
    (trial,) = result.trials
    assert trial.state == "complete" and trial.epochs == 2
    study = optuna.load_study(study_name="mnist_digits_mcc", storage="sqlite:///tune/mnist_digits_mcc/study.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    (best,) = (Path(trial.run_dir) / "checkpoints").glob("epoch*-val_safe_im*.ckpt")  # kept by the same validator
    assert trial.value == pytest.approx(float(best.stem.split("val_safe_im")[1]), abs=1e-4)


@pytest.mark.parametrize(
    "space, message",
    [
        ({"model.init_args.lr_decai": {"low": 0.5, "high": 1.0}}, r"'model.init_args.lr_decai' is not\..*lr_decay"),
        ({"model.init_args.lr_decay": {"low": 1.0, "high": 1.0}}, r"low < high, but got an empty one: \[1.0, 1.0\]"),
        ({"model.init_args.lr_decay": {"type": "beta", "low": 0.1, "high": 1}}, r"`type` to be one of float, int"),
        ({"model.init_args.lr_decay": {"low": 0.0, "high": 1.0, "log": True}}, r"`low` to be positive for a log"),
        ({"model.init_args.head": {"choices": []}}, r"`choices` to be a non-empty list"),
    ],
)
def test_a_bad_search_space_is_one_line_naming_the_key(tmp_path, space, message):
    keys = {"model.init_args.lr_decay", "model.init_args.head"}
    with pytest.raises(ConfigError, match=message) as caught:
        read_space(write_space(tmp_path, space), keys)
    assert "\n" not in str(caught.value)


def test_a_storage_without_its_driver_names_the_package(tmp_path):
    command = ["tune", "--config", CONFIG, "--space", str(write_space(tmp_path)), "--n_trials", "1"]
    result = tlkit([*command, "--storage", "postgresql://localhost/tune", "--", *TINY], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "pip install psycopg2-binary" in lines[-2], lines[-3:]


def test_a_metric_nothing_logs_stops_the_search_at_the_first_sanity_check(console):
    with pytest.raises(ConfigError, match=r"`--direction` max or min for val/accuracy"):
        tune(CONFIG, str(write_space(console)), 3, "val/accuracy")  # no direction to guess: before any trial
    assert not (console / "tune").exists()
    with pytest.raises(ConfigError, match=r"`--metric` 'val/accuracy' .* it logs: val/acc, val/acc_top5, val/f1"):
        tune(CONFIG, str(write_space(console)), 3, "val/accuracy", direction="max")
    trials = optuna.load_study(study_name="digits_finetune", storage="sqlite:///tune/digits_finetune/study.db")
    assert [t.state for t in trials.get_trials()] == [optuna.trial.TrialState.FAIL]  # one trial, not three


def test_a_trial_the_pruner_prunes_stops_after_that_validation(tmp_path):
    from tests.callbacks._helpers import loaders, model
    from tests.conftest import quiet_trainer

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="p", storage=trial_pruning.open_storage(storage))
    for _ in range(2):  # two finished trials with a perfect loss at every epoch: any real run is worse
        study.add_trial(optuna.trial.create_trial(value=0.0, intermediate_values={0: 0.0, 1: 0.0, 2: 0.0}))
    trial = study.ask()
    pruning = TrialPruning(storage, "p", trial._trial_id, monitor="val/loss", mode="min", pruner="median")
    trainer = quiet_trainer(max_epochs=5, callbacks=[pruning], num_sanity_val_steps=0)
    train, val = loaders()
    trainer.fit(model(), train, val)
    assert trainer.current_epoch == 2  # the median pruner's one epoch of warm-up, then stopped: not five epochs
    reported = study.get_trials()[-1]
    assert reported.user_attrs["pruned_at_epoch"] == 1 and list(reported.intermediate_values) == [0, 1]
    assert reported.user_attrs["best_value"] == pytest.approx(float(trainer.callback_metrics["val/loss"]))


@pytest.mark.parametrize(
    ("task", "metric", "expected"),
    [
        (None, "auto", ("val/acc", "max")),
        ("Regression", "auto", ("val/mae", "min")),
        ("Regression", "val/rmse", ("val/rmse", "min")),
        ("MultiLabel", "auto", ("val/map", "max")),
    ],
)
def test_the_objective_is_the_configs_task_metric_in_its_direction(task, metric, expected):
    from tlkit.engines.tuning import resolve_objective

    init_args = {"task": {"class_path": f"tlkit.tasks.{task}"}} if task else {}
    metrics = run_metrics_of_config({"model": {"class_path": "tlkit.strategies.FineTuning", "init_args": init_args}})
    assert resolve_objective(metric, "auto", metrics) == expected


def test_a_trial_link_becomes_the_runs_pruning_callback_and_its_outcome_reads_back(tmp_path):
    """The search hands a trial to its run as one typed link (`TrialLink.as_options`), and reads what the run
    reported as one typed outcome (`TrialOutcome.of`): the attribute names live in one module."""
    from tlkit.callbacks.trial_pruning import TrialLink, TrialOutcome
    from tlkit.cli import TLKitCLI

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=trial_pruning.open_storage(storage), direction="maximize")
    trial = study.ask()
    link = TrialLink(storage, "s", trial._trial_id, "val/acc", "max", "none")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        cli = TLKitCLI(args=["--config", CONFIG, *TINY, *link.as_options()], run=False)
    (pruning,) = [c for c in cli.trainer.callbacks if isinstance(c, TrialPruning)]
    assert (pruning.storage, pruning.trial_id, pruning.monitor, pruning.mode) == (
        storage,
        trial._trial_id,
        "val/acc",
        "max",
    )
    trial.set_user_attr("best_value", 0.5)
    trial.set_user_attr("run_dir", "logs/x/version_0")
    assert TrialOutcome.of(study.get_trials()[0]) == TrialOutcome("logs/x/version_0", 0.5, None)
