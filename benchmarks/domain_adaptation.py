"""Domain adaptation on two real shifts (MNIST-5k -> scikit-learn digits and back), the same shifts with a small
target (150 unlabelled target images), and the synthetic DigitsM, with the pretrained EfficientNet-Lite0: target test
accuracy of every method over seeds, how often a method ends below SourceOnly, and how close label-free selection of
hyperparameters, epoch and method comes to the choice target labels would make.

    python benchmarks/domain_adaptation.py [--shifts mnist-digits digits-mnist digits-mnist-150 mnist-digits-150
        digits-m] [--methods DANN SHOT ...] [--seeds 0 1 2 3 4] [--epochs 6] [--iters 100] [--sweep] [--workers 1]
        [--deadline-minutes 0]

Every run validates each epoch on the target validation split and records the label-free validators (``val/im``,
``val/snd``, ``val/bnm``, ``val/class_ami``), the collapse diagnostics, the source validation accuracy, whether the
epoch is the run's source-only reference, the target validation accuracy (what an oracle with target labels would select
on) and the target test accuracy of that epoch. A method's score is its test accuracy at the epoch with the best
``val/safe_im`` (the `tlkit` command's default checkpoint, computed from the record with the module's own rule); target
labels never choose anything reported as a method's result. The "never below SourceOnly" table counts, per method and
checkpoint rule (the adapted epochs by ``val/im``, as before the reference existed; ``val/im`` and ``val/safe_im`` with
the reference among the candidates; the oracle epoch), the seeds on which it ends more than NOISE below SourceOnly of
the same seed. ``--sweep`` adds each method's sweep of its main hyperparameter (SWEEPS); the selection table then picks
the (hyperparameter, epoch) by each validator, and by the target validation labels (the oracle pick), per seed.
Each run also keeps its target validation probabilities per recorded epoch (``<runs file>_predictions/``, beside the
runs file), with the features the head classified on the target and source validation splits (a validator can be
scored afterwards on saved runs): the ``consensus`` selector reads them (each run's ``val/safe_im`` epoch, then the run
whose predicted classes agree most with the mean prediction of all those epochs), and so do ``val/pixel_ami`` and
``pretrained_ami`` (ClassAMI against k-means clusters of the target validation images in a representation no run
trains: their pixels, or the pretrained backbone's features; the same clusters for every run of a seed).

SHOT adapts the SourceOnly run's selected checkpoint of the same shift and seed (it runs right after it); its
reference is that model, scored before its first step. Each finished run is appended to
benchmarks/results/domain_adaptation_runs.jsonl at once; a rerun with the same settings skips the runs already there,
so the benchmark can be run per method, per shift, or stopped and continued. ``--workers N`` trains N runs at once
(on a GPU; on a 2-core CPU keep 1). Prints Markdown tables and writes benchmarks/results/domain_adaptation.json.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import parse_args, results_dir, smoke

from tlkit.strategies import DomainModule
from tlkit.tasks import Classification

#: Finished runs are appended here, in `results_dir()` (--runs-file changes it).
RUNS = "domain_adaptation_runs.jsonl"
VALIDATORS = ("val/im", "val/snd", "val/bnm", "val/safe_im", "val/class_ami")
#: The `tlkit` command's checkpoint choice for domain adaptation (IM that falls back to the source-only reference), as
#: the strategies say it (`DomainModule.default_monitor`); `direction` is theirs too. Every choice of an epoch or a
#: run is `tlkit.engines.run_selection.best_of`, the rule `tlkit select` applies.
DEFAULT_MONITOR = DomainModule.default_monitor(Classification())[0]
#: A method "ends below SourceOnly" on a seed when its result is more than this below SourceOnly's on that seed.
NOISE = 0.01
#: Recorded at every validation beside the validators: collapse diagnostics and the source validation accuracy.
DIAGNOSTICS = ("val/target_top_class_share", "val/target_predicted_classes", "val/target_marginal_entropy")
ORACLE = "Oracle (target labels)"
#: A selector across runs: each run's `DEFAULT_MONITOR` epoch, then the run agreeing most with all of them.
CONSENSUS = "consensus"
#: Selectors scored afterwards from each run's saved target validation predictions: ClassAMI against k-means clusters
#: of the target validation images in a representation no run trains, the same clusters for every run of a seed
#: (`fixed_representations`): the images' pixels (``val/pixel_ami``, as the strategies log it, so runs saved before
#: they logged it get it too), or the pretrained backbone's features (3 clusters a class, as ``val/pixel_ami``).
FIXED = ("val/pixel_ami", "pretrained_ami")

SHIFTS = {
    "mnist-digits": "MNIST-5k -> digits",
    "digits-mnist": "digits -> MNIST-5k",
    "digits-m": "DigitsM (digits -> digits on photos)",
    "digits-mnist-150": "digits -> 150 MNIST-5k images (small target)",
    "mnist-digits-150": "MNIST-5k -> 150 digits (small target)",
    "digits-mnist-30": "digits -> 30 MNIST-5k images (3 a class)",
}
# name -> (strategy class name, extra init args, target labels); SHOT starts from SourceOnly's checkpoint.
METHODS: dict[str, tuple[str, dict[str, Any], str]] = {
    "SourceOnly": ("SourceOnly", {}, "none"),
    "DANN": ("DANN", {}, "none"),
    "CDAN": ("CDAN", {}, "none"),
    "DAN": ("DAN", {}, "none"),
    "DeepCORAL": ("DeepCORAL", {}, "none"),
    # A longer source-only reference: what the fallback can return when adaptation hurts (see docs/benchmarks.md).
    "DAN (reference_epochs 2)": ("DAN", {"reference_epochs": 2}, "none"),
    "DeepCORAL (reference_epochs 2)": ("DeepCORAL", {"reference_epochs": 2}, "none"),
    "MCC": ("MCC", {}, "none"),
    "SelfTraining": ("SelfTraining", {}, "none"),
    "SelfTraining, as before (no warm-up, teacher or balance)": (
        "SelfTraining",
        {"warmup": 0.0, "teacher_decay": 0.0, "balance_weight": 0.0},
        "none",
    ),
    "SHOT": ("SHOT", {}, "none"),
    "MME (3 target labels per class)": ("MME", {}, "few"),
    ORACLE: ("JointTraining", {"source_weight": 0.0}, "all"),
}
UNSUPERVISED = ("DANN", "CDAN", "DAN", "DeepCORAL", "MCC", "SelfTraining", "SHOT")
# The hyperparameter each method's sweep varies (the default value is always among them).
SWEEPS: dict[str, tuple[str, list[float]]] = {
    "DANN": ("trade_off", [0.3, 1.0, 3.0]),
    "CDAN": ("trade_off", [0.3, 1.0, 3.0]),
    "MCC": ("trade_off", [0.3, 1.0, 3.0]),
    "SelfTraining": ("trade_off", [0.3, 1.0, 3.0]),
    "SHOT": ("pseudo_label_weight", [0.0, 0.3, 1.0]),
}
DEFAULTS = {"trade_off": 1.0, "pseudo_label_weight": 0.3}
# SHOT trains the backbone alone, from a converged model: a smaller step (SHOT's own code: 1e-3 x 0.1 with SGD).
SHOT_OPTIMIZATION = {"lr": 1e-3, "backbone_lr_factor": 0.1}


# ------------------------------------------------------------------------------------------------------- the jobs
def job_key(shift: str, method: str, seed: int, overrides: dict[str, float]) -> str:
    swept = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return f"{shift}|{method}|{seed}|{swept}"


def planned_jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """In priority order, so that a run stopped by its deadline leaves whole tables: every seed of the real shifts
    with default settings, then their sweeps (``--sweep-seeds``), then DigitsM, whole seeds first within each. The
    default SHOT run rides on its SourceOnly job; SHOT's sweep reuses that job's checkpoint."""
    real = [s for s in args.shifts if s != "digits-m"]  # the small-target shifts too
    synthetic = [s for s in args.shifts if s == "digits-m"]
    phases = [(real, False, args.seeds)]
    if args.sweep:
        phases.append((real, True, args.sweep_seeds))
    phases.append((synthetic, False, args.seeds))
    jobs = []
    for shifts, sweep, seeds in phases:
        for seed in seeds:
            for shift in shifts:
                for method in args.methods:
                    if sweep and method in SWEEPS:
                        name, grid = SWEEPS[method]
                        variants = [{name: v} for v in grid if v != DEFAULTS[name]]
                    elif sweep or method == "SHOT":
                        continue  # default SHOT: run by the SourceOnly job of the same shift and seed
                    else:
                        variants = [{}]
                    for overrides in variants:
                        shot = method == "SourceOnly" and "SHOT" in args.methods
                        job = {"shift": shift, "method": method, "seed": seed, "overrides": overrides, "shot": shot}
                        jobs.append(job)
    return jobs


# ----------------------------------------------------------------------------------------------------- one run
def make_data(shift: str, seed: int, target_labels: str, args: argparse.Namespace):
    from tlkit.datamodules import DigitsMDataModule, MnistDigitsDataModule

    common = dict(
        image_size=args.image_size,
        iters_per_epoch=args.iters,
        batch_size=args.batch_size,
        target_labels=target_labels,
        seed=seed,
    )
    if shift == "digits-m":
        return DigitsMDataModule(**common)
    size = shift.rsplit("-", 1)[-1]
    if size.isdigit():  # a small-target shift: the target training pool cut to this many unlabelled images
        common["target_train_size"] = int(size)
    return MnistDigitsDataModule(source="mnist" if shift.startswith("mnist-digits") else "digits", **common)


def evaluated(loader, args: argparse.Namespace):
    """``loader``'s batches, the first ``--eval-batches`` of them where given (a smoke run): every evaluation pass of
    a run reads the same ones."""
    return itertools.islice(loader, args.eval_batches) if args.eval_batches else loader


def per_epoch_recorder(args: argparse.Namespace):
    """A callback recording, at every validation epoch, the validators, target val accuracy and target test
    accuracy (the test split is only ever read to report, never to choose)."""
    import torch
    from lightning.pytorch import Callback

    class RecordEpochs(Callback):
        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []
            # Per recorded epoch: the target validation probabilities (the consensus selector reads them) and the
            # features the head classified, with the source validation split's (validators computed afterwards).
            self.target_val_probabilities: list[torch.Tensor] = []
            self.target_val_features: list[torch.Tensor] = []
            self.source_val_features: list[torch.Tensor] = []
            self.target_val_labels: torch.Tensor | None = None
            self.source_val_labels: torch.Tensor | None = None

        def keep_target_val(self, trainer, pl_module) -> float:
            """Keep the model's target validation probabilities and features (and the labels), and its source
            validation features (source-free SHOT included: its datamodule still holds the split); its target
            validation accuracy."""
            data = trainer.datamodule
            probs, self.target_val_labels, features = outputs(data.evaluation_loader("target_val"), pl_module)
            self.target_val_probabilities.append(probs.half())
            self.target_val_features.append(features.half())
            # Each loader's iterator draws a seed from the global generator: the extra pass must leave the training
            # stream as it was, so that runs stay those measured before it existed.
            with torch.random.fork_rng(devices=[]):
                _, self.source_val_labels, source_features = outputs(data.evaluation_loader("source_val"), pl_module)
            self.source_val_features.append(source_features.half())
            return float((probs.argmax(dim=1) == self.target_val_labels).float().mean())

        def on_train_start(self, trainer, pl_module) -> None:
            # SHOT's reference is the source model it starts from, scored before its first step.
            reference = pl_module.source_reference
            if reference is not None and reference.get("epoch") == -1:
                row = {**reference, "reference": True, "val/target_acc": self.keep_target_val(trainer, pl_module)}
                self.epochs.append({**row, "test_acc": accuracy(trainer.datamodule.test_dataloader(), pl_module)})

        def on_validation_end(self, trainer, pl_module) -> None:  # after the epoch-end metrics are logged
            if trainer.sanity_checking:
                return
            metrics = trainer.callback_metrics
            recorded = (*VALIDATORS, *DIAGNOSTICS, "val/target_acc", "val/source_acc")
            row = {k: float(metrics[k]) for k in recorded if k in metrics}
            # An epoch of the source-only reference (`reference_epochs`): the checkpoint choice's fallback.
            row["reference"] = trainer.current_epoch < pl_module.reference_epochs
            row["test_acc"] = accuracy(trainer.datamodule.test_dataloader(), pl_module)
            row["epoch"] = trainer.current_epoch
            self.epochs.append(row)
            self.keep_target_val(trainer, pl_module)  # its accuracy is the logged val/target_acc

    def outputs(loader, pl_module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model's class probabilities over ``loader`` in its order, the labels, and the features the head
        classified."""
        was_training = pl_module.training
        pl_module.eval()
        probs, labels, features = [], [], []
        with torch.no_grad():
            for x, y in evaluated(loader, args):
                feature = pl_module.extract_features(x.to(pl_module.device))
                probs.append(pl_module.head(feature).softmax(dim=1).cpu())
                features.append(feature.cpu())
                labels.append(y)
        pl_module.train(was_training)
        return torch.cat(probs), torch.cat(labels), torch.cat(features)

    def accuracy(loader, pl_module) -> float:
        probs, labels, _ = outputs(loader, pl_module)
        return float((probs.argmax(dim=1) == labels).float().mean())

    return RecordEpochs()


def train(job: dict[str, Any], method: str, overrides: dict, args: argparse.Namespace, source: str | None = None):
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    import tlkit.strategies as strategies

    class_name, extra, target_labels = METHODS[method]
    seed = job["seed"]
    L.seed_everything(seed, verbose=False)
    started = time.perf_counter()
    data = make_data(job["shift"], seed, target_labels, args)
    lr, factor = args.lr, args.backbone_lr_factor
    kwargs = {**extra, **overrides}
    if method == "SHOT":
        lr, factor = SHOT_OPTIMIZATION["lr"], SHOT_OPTIMIZATION["backbone_lr_factor"]
        kwargs["source_checkpoint"] = source
    else:
        kwargs["weights"] = None if args.weights == "null" else args.weights
    model = getattr(strategies, class_name)(
        backbone=args.backbone,
        backbone_lr_factor=factor,
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01),
        **kwargs,
    )
    recorder = per_epoch_recorder(args)
    # Only SourceOnly's selected model is needed afterwards (SHOT starts from it); the other runs keep none.
    keep = method == "SourceOnly"
    path = source_checkpoint(job["shift"], seed)
    if keep:
        path.unlink(missing_ok=True)  # a stale model of an earlier run must not stand in for this one
    checkpoint = ModelCheckpoint(
        dirpath=path.parent, filename=path.stem, monitor="val/im", mode="max", save_top_k=1, save_weights_only=True
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=[recorder, checkpoint] if keep else [recorder],
        enable_checkpointing=keep,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=args.eval_batches or 1.0,
    )
    trainer.fit(model, datamodule=data)
    key = job_key(job["shift"], method, seed, overrides)
    probabilities = torch.stack(recorder.target_val_probabilities)
    predictions_file(args, key).parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "probabilities": probabilities,
            "labels": recorder.target_val_labels,
            "features": torch.stack(recorder.target_val_features),
            "source_features": torch.stack(recorder.source_val_features),
            "source_labels": recorder.source_val_labels,
        },
        predictions_file(args, key),
    )
    epochs = with_safe_scores(recorder.epochs)
    chosen = best_epoch(epochs, DEFAULT_MONITOR)
    record = {
        "key": key,
        "shift": job["shift"],
        "method": method,
        "seed": seed,
        "overrides": overrides,
        "target_acc": chosen["test_acc"],
        "epochs": epochs,
        "seconds": time.perf_counter() - started,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "workers": args.workers,
        "torch": torch.__version__,
    }
    return record, path if keep else None


def predictions_file(args: argparse.Namespace, key: str) -> Path:
    """Where a run's target validation probabilities per recorded epoch are kept, beside the runs file."""
    runs = Path(args.runs_file)
    name = "".join(c if c.isalnum() or c in "-." else "_" for c in key)
    return runs.parent / f"{runs.stem}_predictions" / f"{name}.pt"


def source_checkpoint(shift: str, seed: int) -> Path:
    """Where the SourceOnly run of ``shift`` and ``seed`` keeps its selected (best ``val/im``) model."""
    return results_dir() / "da_checkpoints" / f"{shift}_SourceOnly_{seed}" / "source.ckpt"


def run_job(job: dict[str, Any], args: argparse.Namespace, done: set[str]) -> None:
    shift, method, seed, overrides = job["shift"], job["method"], job["seed"], job["overrides"]
    if method == "SourceOnly":
        default_shot = job_key(shift, "SHOT", seed, {})
        if job_key(shift, method, seed, overrides) not in done or (job["shot"] and default_shot not in done):
            append_run(train(job, method, overrides, args)[0], args)
        if job["shot"] and default_shot not in done:
            append_run(train(job, "SHOT", {}, args, source=str(source_checkpoint(shift, seed)))[0], args)
        return
    if job_key(shift, method, seed, overrides) in done:
        return
    if method == "SHOT" and not source_checkpoint(shift, seed).is_file():
        train({**job, "method": "SourceOnly"}, "SourceOnly", {}, args)  # its record is already saved
    source = str(source_checkpoint(shift, seed)) if method == "SHOT" else None
    append_run(train(job, method, overrides, args, source=source)[0], args)


# ----------------------------------------------------------------------------------------- results and workers
@contextmanager
def locked(path: Path, mode: str):
    with open(path, mode) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    keep = ("epochs", "iters", "batch_size", "image_size", "lr", "backbone_lr_factor", "backbone", "weights")
    return {k: getattr(args, k) for k in keep}


def append_run(record: dict[str, Any], args: argparse.Namespace) -> None:
    record["settings"] = settings_of(args)
    with locked(Path(args.runs_file), "a") as handle:
        handle.write(json.dumps(record) + "\n")


def load_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The saved runs of ``args``' settings."""
    settings, path = settings_of(args), Path(args.runs_file)
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in runs if r.get("settings") == settings]


def claim_next(counter: Path) -> int:
    with locked(counter, "a+") as handle:
        handle.seek(0)
        taken = int(handle.read() or 0)
        handle.seek(0)
        handle.truncate()
        handle.write(str(taken + 1))
    return taken


def worker(args: argparse.Namespace) -> None:
    """Claim jobs from the shared queue until it is empty or the deadline has passed."""
    import torch

    if not smoke():  # a smoke run keeps its caller's threads (the test suite's one per worker)
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(1, args.workers)))
    jobs = planned_jobs(args)
    done = {r["key"] for r in load_runs(args)}
    counter = results_dir() / f"domain_adaptation_queue{args.queue}"
    while True:
        if args.deadline and time.time() > args.deadline:
            return
        index = claim_next(counter)
        if index >= len(jobs):
            return
        try:
            run_job(jobs[index], args, done)
        except Exception as error:  # one failed run must not stop the others; it is reported and rerun next time
            print(f"FAILED {jobs[index]}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)


def launch_workers(args: argparse.Namespace) -> None:
    queue = f"-{os.getpid()}"
    (results_dir() / f"domain_adaptation_queue{queue}").write_text("0")
    deadline = time.time() + 60 * args.deadline_minutes if args.deadline_minutes else 0
    command = [sys.executable, __file__, *sys.argv[1:], "--worker", "--queue", queue, "--deadline", str(deadline)]
    processes = [subprocess.Popen(command) for _ in range(args.workers)]
    for process in processes:
        process.wait()
    (results_dir() / f"domain_adaptation_queue{queue}").unlink()


# ------------------------------------------------------------------------------------------------------- report
def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def with_safe_scores(epochs: list[dict]) -> list[dict]:
    """Each epoch with ``val/safe_im`` as the module computes it (`safe_im_score`), from what the run recorded: runs
    recorded before the metric existed get it too, and one rule scores every saved run."""
    from tlkit.functional import safe_im_value
    from tlkit.strategies.source_reference import reference_scores

    scores = reference_scores(next((e for e in epochs if e.get("reference")), None))
    out = []
    for e in epochs:
        safe = e["val/im"]
        if not e.get("reference") and "val/target_predicted_classes" in e:
            safe = safe_im_value(safe, e["val/target_predicted_classes"], e.get("val/source_acc"), scores)
        out.append({**e, "val/safe_im": safe})
    return out


def result(run: dict, rule: str) -> float:
    """Target test accuracy of the epoch ``rule`` picks: ``adapted`` (best ``val/im`` among the adapted epochs, as
    before the reference existed), ``val/im`` (best among all, the reference included), ``val/safe_im`` (the
    default), or ``oracle`` (best target validation accuracy)."""
    epochs = with_safe_scores(run["epochs"])
    if rule == "adapted":
        adapted = [e for e in epochs if not e.get("reference")] or epochs
        return best_epoch(adapted, "val/im")["test_acc"]
    metric = "val/target_acc" if rule == "oracle" else rule
    return best_epoch(epochs, metric)["test_acc"]


NEGATIVE_TRANSFER_RULES = {
    "adapted": "val/im, adapted epochs only (no fallback)",
    "val/im": "val/im, reference included",
    "val/safe_im": "val/safe_im (default)",
    "oracle": "oracle epoch (target labels)",
}


def negative_transfer_table(shift_runs: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    """Per method and checkpoint rule: on how many seeds it ends below SourceOnly (by more than NOISE), and its mean
    test accuracy; SourceOnly's own result is its default choice."""
    baseline = {r["seed"]: result(r, DEFAULT_MONITOR) for r in shift_runs if r["method"] == "SourceOnly"}
    table: dict[str, Any] = {}
    # Every method that uses no target label, its variants (a longer reference) included.
    unsupervised = [m for m in args.methods if m != "SourceOnly" and METHODS[m][2] == "none"]
    for method in unsupervised:
        runs = [r for r in shift_runs if r["method"] == method and not r["overrides"] and r["seed"] in baseline]
        if not runs:
            continue
        row = {"seeds": len(runs)}
        for rule in NEGATIVE_TRANSFER_RULES:
            accs = {r["seed"]: result(r, rule) for r in runs}
            row[rule] = {
                "below": sum(acc < baseline[seed] - NOISE for seed, acc in accs.items()),
                "mean": statistics.mean(accs.values()),
                "std": mean_std(list(accs.values()))[1],
            }
        table[method] = row
    if table:
        print(
            f"\nNever below SourceOnly: seeds on which a method ends more than {100 * NOISE:.0f} point below "
            f"SourceOnly of the same seed / its mean test accuracy, %, by checkpoint rule (SourceOnly "
            f"{100 * statistics.mean(baseline.values()):.1f})\n"
        )
        print("| method | " + " | ".join(NEGATIVE_TRANSFER_RULES.values()) + " | seeds |")
        print("|---" * (len(NEGATIVE_TRANSFER_RULES) + 2) + "|")
        for method, row in table.items():
            cells = " | ".join(
                f"{row[r]['below']} / {100 * row[r]['mean']:.1f} +- {100 * row[r]['std']:.1f}"
                for r in NEGATIVE_TRANSFER_RULES
            )
            print(f"| {method} | {cells} | {row['seeds']} |")
    return table


def direction(metric: str) -> str:
    """Which way ``metric`` is better, as the domain strategies say (`DomainModule.metric_directions`); the
    pretrained-feature ClassAMI is ClassAMI."""
    directions = DomainModule.metric_directions(Classification())
    return directions["val/class_ami" if metric == "pretrained_ami" else metric]


def best_epoch(epochs: list[dict], metric: str) -> dict:
    """The recorded epoch with the best ``metric`` (`best_of`, in the metric's direction)."""
    from tlkit.engines.run_selection import best_of

    return best_of(epochs, lambda e: e[metric], direction(metric))


def pick(epochs_by_run: list[list[dict]], metric: str) -> dict:
    """The (run, epoch) with the best ``metric`` over a seed's candidate runs."""
    return best_epoch([e for epochs in epochs_by_run for e in epochs], metric)


def saved_predictions(args: argparse.Namespace, key: str):
    """A run's target validation probabilities per recorded epoch (epochs x images x classes), None for runs saved
    before they were kept."""
    import torch

    path = predictions_file(args, key)
    return torch.load(path, weights_only=True)["probabilities"].float() if path.is_file() else None


def fixed_representations(shift: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The target validation images of ``shift`` and ``seed``, in the order every run saved its predictions, as
    ``images`` (the evaluation transform's input to the model) and as ``pretrained`` features (the backbone with its
    pretrained weights, before any training); computed once, cached beside the runs file."""
    import lightning as L
    import torch

    from tlkit.strategies import SourceOnly

    runs = Path(args.runs_file)
    path = runs.parent / f"{runs.stem}_fixed" / f"{shift}_{seed}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    data = make_data(shift, seed, "none", args)
    model = SourceOnly(backbone=args.backbone, weights=None if args.weights == "null" else args.weights)
    # Zero epochs: the trainer sets the datamodule up for this backbone (its data config) and trains nothing.
    trainer = L.Trainer(max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    model.eval()
    images, features, labels = [], [], []
    with torch.no_grad():
        for x, y in evaluated(data.evaluation_loader("target_val"), args):
            images.append(x)
            features.append(model.extract_features(x))
            labels.append(y)
    fixed = {"images": torch.cat(images), "pretrained": torch.cat(features), "labels": torch.cat(labels)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixed, path)
    return fixed


def with_fixed_scores(epochs: list[dict], probabilities: Any, fixed: dict[str, Any]) -> list[dict]:
    """Each epoch with the `FIXED` selectors' scores of its saved target validation probabilities."""
    from tlkit.functional import class_ami_score, image_thumbnails, pixel_ami_score
    from tlkit.functional.validators import PIXEL_CLUSTERS_PER_CLASS

    thumbnails = image_thumbnails(fixed["images"])
    clusters = PIXEL_CLUSTERS_PER_CLASS * probabilities.shape[-1]
    out = []
    for epoch, probs in zip(epochs, probabilities):
        scores = {
            "val/pixel_ami": float(pixel_ami_score(thumbnails, probs)),
            "pretrained_ami": float(class_ami_score(fixed["pretrained"], probs, clusters=clusters)),
        }
        out.append({**epoch, **scores})
    return out


def consensus_pick(runs: list[tuple[list[dict], Any]]) -> dict:
    """`CONSENSUS`'s choice among runs given as (epochs, target validation probabilities per epoch): each run's
    ``val/safe_im`` epoch, then the one whose predicted classes agree most with the mean prediction of them all
    (`tlkit.engines.run_selection.consensus_choice`, the rule of ``tlkit select --by consensus``)."""
    from tlkit.engines.run_selection import best_of, consensus_choice

    chosen = []
    for epochs, probabilities in runs:
        index = best_of(range(len(epochs)), lambda i, e=epochs: e[i][DEFAULT_MONITOR], direction(DEFAULT_MONITOR))
        chosen.append((epochs[index], probabilities[index]))
    winner, _ = consensus_choice([p for _, p in chosen])
    return chosen[winner][0]


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for shift in args.shifts:
        shift_runs = [r for r in runs if r["shift"] == shift and r["seed"] in args.seeds]
        defaults = {m: [r for r in shift_runs if r["method"] == m and not r["overrides"]] for m in args.methods}
        rows = {}
        for method, method_runs in defaults.items():
            if not method_runs:
                continue
            accs = [result(r, DEFAULT_MONITOR) for r in method_runs]
            mean, std = mean_std(accs)
            rows[method] = {
                "mean": mean,
                "std": std,
                "seeds": len(accs),
                "per_seed": {r["seed"]: acc for r, acc in zip(method_runs, accs)},
                "seconds": statistics.median(r["seconds"] for r in method_runs),
            }
        low = rows.get("SourceOnly", {}).get("mean")
        high = rows.get(ORACLE, {}).get("mean")
        print(f"\n### {SHIFTS[shift]}\n")
        print("| method | target test accuracy, % (mean +- std) | seeds | gap recovered | wall time per run |")
        print("|---|---|---|---|---|")
        for method, row in rows.items():
            gap = ""
            if low is not None and high is not None and high > low and method not in ("SourceOnly", ORACLE):
                row["gap_recovered"] = (row["mean"] - low) / (high - low)
                gap = f"{100 * row['gap_recovered']:.0f}%"
            print(
                f"| {method} | {100 * row['mean']:.1f} +- {100 * row['std']:.1f} | {row['seeds']} | {gap} | "
                f"{row['seconds']:.0f} s |"
            )
        negative = negative_transfer_table(shift_runs, args)
        selection = selection_table(shift_runs, args, low, high)
        summary[shift] = {"methods": rows, "negative_transfer": negative, "selection": selection}
    return summary


def selection_table(shift_runs, args, low, high) -> dict[str, Any]:
    """Per seed, each selector picks (hyperparameter, epoch) within a method, and (method, hyperparameter, epoch)
    across the unsupervised methods; reported: the test accuracy of its pick, mean over seeds."""
    # Each epoch names its run's method, so that the per-seed picks can say which method each selector chose.
    scored = [(r, [{**e, "method": r["method"]} for e in with_safe_scores(r["epochs"])]) for r in shift_runs]
    # Runs saved before a validator existed lack it: it selects only where every run recorded it.
    selectors = [s for s in (*VALIDATORS, "val/target_acc") if all(s in e for _, epochs in scored for e in epochs)]
    predictions = {r["key"]: saved_predictions(args, r["key"]) for r, _ in scored}
    if scored and all(p is not None for p in predictions.values()):
        selectors[-1:-1] = [CONSENSUS, *FIXED]
        fixed = {key: fixed_representations(*key, args) for key in {(r["shift"], r["seed"]) for r, _ in scored}}
        scored = [(r, with_fixed_scores(e, predictions[r["key"]], fixed[r["shift"], r["seed"]])) for r, e in scored]
    methods = [m for m in UNSUPERVISED if m in args.methods]
    table: dict[str, dict[str, float]] = {}
    for scope in [*methods, "any unsupervised method"]:
        members = methods if scope == "any unsupervised method" else [scope]
        per_selector: dict[str, list[float]] = {s: [] for s in selectors}
        picks: dict[str, list[str]] = {s: [] for s in selectors}  # per seed: "accuracy method"
        seeds: list[int] = []  # the seeds that had candidates, in the order of the picks
        for seed in args.seeds:
            runs = [(r, epochs) for r, epochs in scored if r["seed"] == seed and r["method"] in members]
            candidates = [epochs for _, epochs in runs]
            if len(candidates) < 2 and scope != "any unsupervised method":
                continue  # no sweep for this seed
            if not candidates:
                continue
            seeds.append(seed)
            for selector in selectors:
                if selector == CONSENSUS:
                    chosen = consensus_pick([(epochs, predictions[r["key"]]) for r, epochs in runs])
                else:
                    chosen = pick(candidates, selector)
                per_selector[selector].append(chosen["test_acc"])
                picks[selector].append(f"{100 * chosen['test_acc']:.1f} {chosen['method']}")
        if per_selector["val/im"]:
            table[scope] = {s: statistics.mean(v) for s, v in per_selector.items()}
            table[scope]["seeds"] = len(per_selector["val/im"])
            table[scope]["per_seed"] = {"seeds": seeds, **picks}
    if table:
        print(
            "\nLabel-free selection: target test accuracy (%) of the run and epoch each selector picks, mean over "
            "seeds (`val/target_acc` is the oracle pick, with target labels)\n"
        )
        print("| choosing among | " + " | ".join(selectors) + " | seeds |")
        print("|---" * (len(selectors) + 2) + "|")
        for scope, row in table.items():
            cells = " | ".join(f"{100 * row[s]:.1f}" for s in selectors)
            print(f"| {scope} | {cells} | {row['seeds']} |")
        overall = table.get("any unsupervised method")
        if overall and low is not None and high is not None and high > low:
            for s in selectors:
                overall[f"gap_recovered/{s}"] = (overall[s] - low) / (high - low)
            print(
                "Gap recovered by the method chosen per validator: "
                + ", ".join(f"{s} {100 * overall[f'gap_recovered/{s}']:.0f}%" for s in selectors)
            )
        if overall:
            seeds = overall["per_seed"]["seeds"]
            print(f"\nPer seed ({', '.join(map(str, seeds))}): the pick among the unsupervised methods\n")
            print("| selector | " + " | ".join(f"seed {seed}" for seed in seeds) + " |")
            print("|---" * (len(seeds) + 1) + "|")
            for s in selectors:
                print(f"| {s} | " + " | ".join(overall["per_seed"][s]) + " |")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=list(SHIFTS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iters", type=int, default=100, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--backbone-lr-factor", type=float, default=0.5)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="imagenet, or null (a quick check of the script)")
    parser.add_argument("--sweep", action="store_true", help="also run each method's hyperparameter sweep (SWEEPS)")
    parser.add_argument("--sweep-seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the sweeps")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once (on a GPU)")
    parser.add_argument("--eval-batches", type=int, default=None, help="evaluate on this many batches (default: all)")
    parser.add_argument("--deadline-minutes", type=float, default=0, help="start no run after this (0: no limit)")
    parser.add_argument("--runs-file", default=None, help=f"where finished runs are appended (default: results/{RUNS})")
    parser.add_argument("--report-only", action="store_true", help="print the tables of the runs already saved")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--queue", default="", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=0, help=argparse.SUPPRESS)
    args = parse_args(
        parser,
        {
            "shifts": ["digits-mnist-30"],
            "methods": ["SourceOnly", "DANN", "SHOT", "Oracle (target labels)"],
            "seeds": [0],
            "epochs": 2,
            "iters": 2,
            "batch_size": 8,
            "eval_batches": 2,
        },
    )
    args.runs_file = args.runs_file or str(results_dir() / RUNS)
    results_dir().mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args)
    if not args.report_only:
        if args.workers > 1:
            launch_workers(args)
        else:
            args.queue, args.deadline = f"-{os.getpid()}", 0
            (results_dir() / f"domain_adaptation_queue{args.queue}").write_text("0")
            if args.deadline_minutes:
                args.deadline = time.time() + 60 * args.deadline_minutes
            worker(args)
            (results_dir() / f"domain_adaptation_queue{args.queue}").unlink()
    runs = load_runs(args)
    # Where the saved runs were trained (a GPU machine's runs may be reported on another).
    devices = sorted({f"{r.get('device', 'cpu')} (torch {r.get('torch', '?')})" for r in runs})
    machine = f"{platform.machine()}, runs trained on: {', '.join(devices)}"
    print(
        f"{args.backbone} ({args.weights}), {args.image_size} px, {args.epochs} epochs x {args.iters} steps, batch "
        f"{args.batch_size} per domain, AdamW lr {args.lr} (backbone x{args.backbone_lr_factor}; SHOT "
        f"{SHOT_OPTIMIZATION['lr']} x{SHOT_OPTIMIZATION['backbone_lr_factor']}), seeds {args.seeds}; {machine}"
    )
    summary = report(args, runs)
    out = results_dir() / "domain_adaptation.json"
    out.write_text(json.dumps({"settings": settings_of(args), "machine": machine, "summary": summary}, indent=2))
    print(f"\nJSON: {out}; runs: {args.runs_file}")


if __name__ == "__main__":
    main()
