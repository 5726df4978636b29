"""Choosing among finished runs by a logged metric: label-free model and hyperparameter selection for
domain adaptation (``val/safe_im``, ``val/im``, ``val/snd``, ``val/bnm``, ``val/class_ami``, ``val/pixel_ami``), read
from the runs' TensorBoard logs.

A user adapting to an unlabelled target cannot choose ``trade_off``, the learning rate or the method itself by
target accuracy. The answer studied by Musgrave et al. (2022): train a few candidates, score each run by a validator
computed on unlabelled target predictions, and keep the best. `score_runs` reads each run's validator curve (its
best epoch), `select_run` picks the winner, `differing_settings` says what distinguishes the runs.
`consensus_scores` scores runs against each other instead: each run's best ``val/safe_im`` epoch by how often its
target predictions agree with the mean prediction of all the runs' epochs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tlkit.engines.run_metrics import RunMetrics
from tlkit.errors import ConfigError, config_error
from tlkit.functional.collapse import collapsed
from tlkit.tasks import Mode

T = TypeVar("T")


@dataclass(frozen=True)
class RunScore:
    """One run's best value of the selection metric.

    Attributes:
        run: the run folder (``logs/<name>/version_<n>``).
        value: the metric's best value over the run's validation epochs.
        epoch: the epoch where it was reached.
        checkpoint: the run's checkpoint of that epoch, if one was kept (``checkpoints/epoch<NNN>-*.ckpt``).
        diagnostics: the collapse diagnostics logged at that epoch (`DIAGNOSTICS`), where the run logged them.
    """

    run: Path
    value: float
    epoch: int
    checkpoint: Path | None
    diagnostics: dict[str, float] = dataclasses.field(default_factory=dict)

    def collapse(self) -> str:
        """ "2 of 8 classes" when 90% of the target predictions at this epoch fill fewer than half the classes the
        run's source-only reference filled, else ""."""
        predicted = self.diagnostics.get("val/target_predicted_classes")
        spread = self.diagnostics.get("val/reference_target_predicted_classes")
        if predicted is None or spread is None or not collapsed(predicted, spread):
            return ""
        return f"{int(predicted)} of {int(spread)} classes"


#: Logged by the domain-adaptation strategies at every validation: how far target predictions collapsed (the share
#: of the most frequent class, the classes that take 90% of them), and the source-only reference's value.
DIAGNOSTICS = (
    "val/target_top_class_share",
    "val/target_predicted_classes",
    "val/reference_target_predicted_classes",
)


#: `tlkit select`'s selector across runs (`consensus_scores`).
CONSENSUS = "consensus"

#: `tlkit select`'s default: the metric `automatic_metric` chooses for the runs given. Among runs of one strategy, the
#: runs' own checkpoint metric (for a domain-adaptation sweep val/safe_im: IM guarded by each run's source-only
#: reference, whose epoch choice within a method is within 2.5 points of the oracle's for most methods). Among
#: domain-adaptation runs of different strategies: ClassAMI, at or above val/safe_im's pick on the mean of every
#: benchmark shift (IM prefers the methods that maximise confidence themselves, MCC and SHOT; docs/benchmarks.md,
#: "Three seeds on the full-size shifts").
AUTO = "auto"
METHODS_METRIC = "val/class_ami"
#: Among runs of different strategies on a target whose classes are shapes (digits, characters): within a point of
#: the oracle's pick on every seed of digits -> MNIST, where `METHODS_METRIC` is 22 points below (docs/benchmarks.md,
#: "ClassAMI against the images' own clusters"); not the default, since photographs' pixels cluster by colour.
SHAPES_METHODS_METRIC = "val/pixel_ami"


def automatic_metric(runs: Sequence[RunMetrics]) -> tuple[str, str]:
    """The metric ``--by auto`` selects on, and why: `METHODS_METRIC` among domain-adaptation runs of more than one
    strategy; otherwise the runs' own checkpoint metric (the task's, or the strategy's: ``val/mae`` for regression,
    ``val/safe_im`` for a domain-adaptation sweep), which must be the same for every run."""
    strategies = {run.strategy for run in runs}
    if len(strategies) > 1 and all(METHODS_METRIC in run.directions for run in runs):
        return METHODS_METRIC, f"runs of {len(strategies)} strategies"
    monitors = sorted({run.monitor[0] for run in runs})
    if len(monitors) > 1:
        raise ConfigError(
            f"Expected runs that checkpoint on the same metric for `--by auto`, but they checkpoint on "
            f"{', '.join(monitors)}; choose one with --by."
        )
    return monitors[0], "the runs' checkpoint metric"


def direction_in_runs(metric: str, runs: Sequence[RunMetrics]) -> Mode:
    """Which way ``metric`` is better, as the runs' strategies and tasks say; a metric they give no direction (or
    opposite ones) is one line asking for ``--mode``."""
    modes = {run.direction(metric) for run in runs}
    if len(modes) == 1 and None not in modes:
        return modes.pop()
    raise ConfigError(
        f"Expected `--mode` max or min for {metric}: the runs' tasks and strategies do not say which way it is better."
    )


def best_of(items: Sequence[T], value: Callable[[T], float], mode: Mode) -> T:
    """The item of highest (``max``) or lowest (``min``) ``value``, the first given on a tie: the one rule every
    selection applies, an epoch within a run, a run among runs, in ``tlkit select`` as in the benchmarks."""
    if not items:
        raise ConfigError("Expected at least one run to choose from, but got none.")
    return (max if mode == "max" else min)(items, key=value)


def consensus_choice(probabilities: Sequence[Any]) -> tuple[int, list[float]]:
    """(the index of the run agreeing most, each run's agreement) among runs' target validation probabilities
    (`tlkit.functional.consensus_agreement`)."""
    from tlkit.functional import consensus_agreement  # imports torch: only this selector needs it

    agreement = list(consensus_agreement(list(probabilities)))
    return best_of(range(len(agreement)), agreement.__getitem__, "max"), agreement


def metric_curve(run: Path, metric: str) -> list[tuple[int, float]]:
    """The (epoch, value) pairs ``metric`` was logged with in ``run``'s TensorBoard event files, in step order.

    Raises a `ConfigError` naming the metrics the run did log when ``metric`` is not among them.
    """
    return metric_curves(run, [metric])[metric]


def metric_curves(
    run: Path, metrics: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, list[tuple[int, float]]]:
    """`metric_curve` of each of ``metrics`` (required) and of those of ``optional`` the run logged, read at once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # slow import, used here only

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    for metric in metrics:
        if metric not in tags:
            logged = ", ".join(sorted(t for t in tags if t.startswith("val/"))) or "no val/ metric"
            raise config_error("by", f"a metric the run {run} logged ({logged})", metric)
    epochs = {e.step: int(e.value) for e in events.Scalars("epoch")} if "epoch" in tags else {}
    curves = {}
    for metric in [*metrics, *(m for m in optional if m in tags)]:
        # A resumed run repeats no step, but a rewritten one could: the latest value of a step wins.
        values = {e.step: e.value for e in events.Scalars(metric)}
        curves[metric] = [(epochs.get(step, -1), values[step]) for step in sorted(values)]
    return curves


def _checkpoint_of_epoch(run: Path, epoch: int) -> Path | None:
    matches = sorted((run / "checkpoints").glob(f"epoch{epoch:03d}-*.ckpt")) if epoch >= 0 else []
    return matches[0] if matches else None


def score_runs(runs: Iterable[Path], metric: str, mode: Mode) -> list[RunScore]:
    """Each run's best ``metric`` value (its best epoch), in the order given."""
    if mode not in ("max", "min"):
        raise config_error("mode", "'max' or 'min'", mode)
    scores = []
    for run in runs:
        curves = metric_curves(run, [metric], DIAGNOSTICS)
        curve = curves[metric]
        if not curve:
            raise ConfigError(f"Expected the run {run} to have logged `{metric}` at least once, but it has no value.")
        epoch, value = best_of(curve, lambda point: point[1], mode)
        diagnostics = {name: v for name in DIAGNOSTICS if name in curves for e, v in curves[name] if e == epoch}
        if "val/reference_target_predicted_classes" in curves and curves["val/reference_target_predicted_classes"]:
            # Logged from the epoch after the reference on: the reference's own value, whichever epoch was picked.
            diagnostics["val/reference_target_predicted_classes"] = curves["val/reference_target_predicted_classes"][0][
                1
            ]
        scores.append(RunScore(run, value, epoch, _checkpoint_of_epoch(run, epoch), diagnostics))
    return scores


def consensus_scores(runs: Sequence[Path]) -> list[RunScore]:
    """Each run's best ``val/safe_im`` epoch (what `tlkit.strategies.target_predictions` keeps), scored by the share
    of the target validation images on which it predicts the class of the mean prediction of all the runs' epochs
    (higher is better).

    A run that agrees with the others is rarely the one adaptation sent its own wrong way; a confident, collapsed run
    (the one IM prefers) disagrees with them. Raises a `ConfigError` for a run that kept no predictions (not a
    domain-adaptation run, or one fitted by a tlkit before it kept them) and for runs scored on different images.
    """
    import torch  # slow imports: only this selector needs them

    from tlkit.strategies.target_predictions import CONSENSUS_MONITOR, TARGET_PREDICTIONS

    scores, probabilities = [], []
    for score in score_runs(runs, CONSENSUS_MONITOR, "max"):
        path = score.run / TARGET_PREDICTIONS
        if not path.is_file():
            raise ConfigError(
                f"Expected {path} (the target validation predictions a domain-adaptation run keeps), but it is "
                f"missing: `--by {CONSENSUS}` compares domain-adaptation runs; choose this one by {CONSENSUS_MONITOR}."
            )
        kept = torch.load(path, weights_only=True)
        probabilities.append(kept["probabilities"].float())
        epoch = int(kept["epoch"])
        scores.append(dataclasses.replace(score, epoch=epoch, checkpoint=_checkpoint_of_epoch(score.run, epoch)))
    shapes = {tuple(p.shape) for p in probabilities}
    if len(shapes) > 1:
        found = ", ".join(f"{s.run}: {tuple(p.shape)}" for s, p in zip(scores, probabilities))
        raise ConfigError(
            f"Expected runs scored on the same target validation images (the same data and devices), but their "
            f"predictions differ in shape (images, classes): {found}."
        )
    _, agreement = consensus_choice(probabilities)
    return [dataclasses.replace(score, value=value) for score, value in zip(scores, agreement)]


def select_run(scores: Sequence[RunScore], mode: Mode) -> RunScore:
    """The run with the best score; ties go to the first given."""
    return best_of(scores, lambda score: score.value, mode)


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): config}


def run_settings(run: Path) -> dict[str, Any]:
    """``run``'s ``config.yaml`` as dotted keys (``model.init_args.trade_off``); empty where it has none."""
    path = run / "config.yaml"
    return _flatten(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def differing_settings(runs: Sequence[Path]) -> list[dict[str, Any]]:
    """For each run, the settings of its ``config.yaml`` whose values differ between the runs (what was swept)."""
    configs = [run_settings(run) for run in runs]
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1 and k != "ckpt_path"]
    return [{k: c.get(k) for k in differing} for c in configs]
