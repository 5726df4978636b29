"""Text: Rotten Tomatoes sentiment with the pretrained all-MiniLM-L6-v2 encoder, through the same strategies and
callbacks as images: the cached linear probe, full fine-tuning, gradual unfreezing with warm-up (ULMFiT), and LoRA.

    python benchmarks/text_classification.py [--seeds 0 1 2] [--labels 10 100] [--methods ...]

Test accuracy (mean and std over seeds), fit wall time and time per training step, plus the cost of the cached probe
against one encoder pass over the texts it reads. Each finished run is stored in
benchmarks/results/text_classification_runs.json and skipped when the script runs again (``--fresh`` starts over).
Writes benchmarks/results/text_classification.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import lightning as L
import torch
from _common import machine, parse_args, quiet_trainer, results_dir, smoke, table, write_json

from tlkit.backbones import Adapter, Backbone
from tlkit.callbacks import LRWarmup, ProgressiveUnfreezing
from tlkit.data_request import DataRequest
from tlkit.datamodules import RottenTomatoesDataModule
from tlkit.features import FeatureCache
from tlkit.strategies import FeatureExtraction, FineTuning

RUNS_FILE = "text_classification_runs.json"  # in results_dir()
ENCODER = "hf:sentence-transformers/all-MiniLM-L6-v2"
METHODS = ["FeatureExtraction (cached)", "FineTuning", "Gradual unfreezing + warm-up", "LoRA r8"]
MAX_LENGTH = 64
PROBE_BATCH = 128
#: The share of the snippets held out for validation and test (``--smoke`` holds out fewer).
HELD_OUT = {"val_fraction": 0.02, "test_fraction": 0.15}


def adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def recipe(method: str, labels: str) -> tuple[L.LightningModule, list, int]:
    """(model, callbacks, epochs): the shipped configs' settings (configs/text_*.yaml); fewer labels, more epochs.

    The head learns at ``lr``, layer ``k`` below it at ``lr * 0.5**k``: a new head needs a far higher learning rate
    than the pretrained layers under it, and these runs have tens of steps, not thousands.
    """
    few = labels != "all" and int(labels) <= 10
    if method == "FeatureExtraction (cached)":
        return FeatureExtraction(ENCODER, optimizer=adamw(1e-2)), [], 60 if few else 30
    if method == "FineTuning":
        return FineTuning(ENCODER, lr_decay=0.5, optimizer=adamw(5e-4)), [], 30 if few else 10
    if method == "Gradual unfreezing + warm-up":
        # ULMFiT: the head alone first (on cached features), then one more layer from the top every 2 epochs.
        callbacks = [ProgressiveUnfreezing(every_n_epochs=2), LRWarmup(duration=1, unit="epochs")]
        return FineTuning(ENCODER, lr_decay=0.5, optimizer=adamw(5e-4)), callbacks, 30 if few else 14
    if method == "LoRA r8":
        adapter = Adapter(rank=8, alpha=16, target_modules=["query", "value"], checkpoint="adapter_only")
        return FineTuning(ENCODER, lr_decay=1.0, adapter=adapter, optimizer=adamw(1e-3)), [], 30 if few else 10
    raise ValueError(method)


def data(labels: str, seed: int, batch_size: int = 32) -> RottenTomatoesDataModule:
    # A small validation split, checked once at the end: these runs select nothing on it.
    per_class = None if labels == "all" else int(labels)
    return RottenTomatoesDataModule(
        labels_per_class=per_class,
        max_length=MAX_LENGTH,
        **HELD_OUT,
        seed=seed,
        batch_size=batch_size,
    )


def run(method: str, labels: str, seed: int, epochs: int | None = None) -> dict:
    L.seed_everything(seed, verbose=False)
    FeatureCache.memory.clear()  # the probe pays for its features in every run
    model, callbacks, recipe_epochs = recipe(method, labels)
    epochs = epochs or recipe_epochs
    # The probe's head steps on cached features cost Lightning's per-step overhead and little else: larger batches.
    dm = data(labels, seed, batch_size=PROBE_BATCH if method == "FeatureExtraction (cached)" else 32)
    trainer = quiet_trainer(max_epochs=epochs, callbacks=callbacks, check_val_every_n_epoch=epochs)
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - started
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    return {"acc": result["test/acc"], "seconds": seconds, "steps": trainer.global_step}


def encoder_pass(labels: str, seed: int) -> float:
    """One encoder pass (eval, no grad) over the texts the probe reads (train and validation): its floor."""
    backbone = Backbone(ENCODER).eval()
    dm = data(labels, seed)
    dm.setup()
    collate = dm.collate(DataRequest.for_backbone(backbone))
    texts = dm.splits["train"].samples + dm.splits["val"].samples
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), 128):
            encoded, _ = collate([(t, 0) for t in texts[i : i + 128]])
            backbone(encoded)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels", nargs="+", default=["10", "100"], help="labels per class: a number or 'all'")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--fresh", action="store_true", help="discard stored runs")
    parser.add_argument("--epochs", type=int, default=None, help="default: each method's recipe")
    args = parse_args(parser, {"seeds": [0], "labels": ["2"], "epochs": 1, "fresh": True})
    if smoke():
        HELD_OUT.update(val_fraction=0.005, test_fraction=0.005)
    runs_file = results_dir() / RUNS_FILE
    stored = {} if args.fresh or not runs_file.exists() else json.loads(runs_file.read_text())
    for labels in args.labels:
        for seed in args.seeds:
            key = f"{labels}/{seed}"
            for method in args.methods:
                if method in stored.get(key, {}):
                    continue
                stored.setdefault(key, {})[method] = run(method, labels, seed, args.epochs)
                if method == "FeatureExtraction (cached)":
                    stored[key]["encoder pass"] = {"seconds": encoder_pass(labels, seed)}
                runs_file.parent.mkdir(parents=True, exist_ok=True)
                runs_file.write_text(json.dumps(stored, indent=1))
                print(f"{key} {method}: {stored[key][method]}", flush=True)
    for labels in args.labels:
        runs = [stored[f"{labels}/{s}"] for s in args.seeds if f"{labels}/{s}" in stored]
        probe = [r["FeatureExtraction (cached)"]["acc"] for r in runs if "FeatureExtraction (cached)" in r]
        rows = []
        for method in args.methods:
            found = [r[method] for r in runs if method in r]
            if not found:
                continue
            accs = [r["acc"] for r in found]
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            vs_probe = f"{100 * (statistics.mean(accs) - statistics.mean(probe)):+.1f}" if probe else "-"
            step = statistics.median(r["seconds"] / max(1, r["steps"]) for r in found)
            rows.append(
                [
                    method,
                    f"{100 * statistics.mean(accs):.1f} ± {100 * spread:.1f}",
                    vs_probe,
                    f"{statistics.median(r['seconds'] for r in found):.0f} s",
                    f"{1000 * step:.0f} ms",
                    str(len(found)),
                ]
            )
        print(f"\nRotten Tomatoes, {labels} labels per class, {MAX_LENGTH} tokens, seeds {args.seeds} ({machine()})")
        print(table(["method", "test accuracy %", "vs probe", "fit wall time", "per step", "seeds"], rows))
        ratios = [
            r["FeatureExtraction (cached)"]["seconds"] / r["encoder pass"]["seconds"]
            for r in runs
            if "encoder pass" in r
        ]
        if ratios:
            print(f"Cached probe fit / one encoder pass over its texts: {statistics.median(ratios):.2f}x (median)")
    print(f"JSON: {write_json('text_classification', {'args': vars(args), 'runs': stored})}")


if __name__ == "__main__":
    main()
