"""Audio: who speaks and which language, on the recorded voices tlkit ships, with Resemblyzer's speaker encoder:
pretrained against random initialisation, the cached linear probe against fine-tuning.

    python benchmarks/audio.py [--seeds 0 1 2 3 4] [--tasks speaker language]

The voices (`VoicesDataModule`): the numbers 0 to 20 from Asterisk's prompts, 84 clips; speaker (3 classes: Allison
in English and Spanish, June, Carlo) and language (4 classes: en, es, fr, it; Allison's English and Spanish clips
differ by language only). Each seed draws its own stratified split (30% of the clips tested). Test accuracy, mean and
standard deviation over seeds, and fit time. Writes benchmarks/results/audio.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from _common import machine, mean_std, parse_args, quiet_trainer, table, write_json

from tlkit.datamodules import VoicesDataModule
from tlkit.features import FeatureCache
from tlkit.strategies import FeatureExtraction, FineTuning

BACKBONE = "audio:resemblyzer"
METHODS = {
    # name: (strategy, weights, epochs)
    "linear probe, pretrained": ("probe", "imagenet", 40),
    "linear probe, random init": ("probe", None, 40),
    "fine-tuning, pretrained": ("finetune", "imagenet", 15),
    "fine-tuning, random init": ("finetune", None, 15),
}


def adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def model(strategy: str, weights: str | None, classes: int) -> L.LightningModule:
    if strategy == "probe":
        return FeatureExtraction(BACKBONE, weights=weights, num_classes=classes, optimizer=adamw(1e-2))
    # Pretrained: the top LSTM layer and the projection, as the shipped config; random init: every layer trains.
    groups = 2 if weights is not None else None
    return FineTuning(
        BACKBONE, weights=weights, num_classes=classes, trainable_groups=groups, lr_decay=0.5, optimizer=adamw(5e-3)
    )


def run(task: str, method: str, seed: int, epochs: int | None) -> dict:
    strategy, weights, recipe_epochs = METHODS[method]
    L.seed_everything(seed, verbose=False)
    FeatureCache.memory.clear()  # the probe pays for its features in every run
    # The probe reads clips whole (cached features); fine-tuning crops and varies their volume.
    augment = strategy != "probe"
    dm = VoicesDataModule(task=task, batch_size=16, val_fraction=0.15, test_fraction=0.3, seed=seed, augment=augment)
    dm.setup("fit")
    trainer = quiet_trainer(max_epochs=epochs or recipe_epochs, check_val_every_n_epoch=epochs or recipe_epochs)
    started = time.perf_counter()
    trainer.fit(model(strategy, weights, dm.num_classes), datamodule=dm)
    seconds = time.perf_counter() - started
    (result,) = trainer.test(trainer.lightning_module, datamodule=dm, verbose=False)
    return {"acc": result["test/acc"], "seconds": seconds, "test_clips": len(dm.splits["test"].labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--tasks", nargs="+", default=["speaker", "language"], choices=["speaker", "language"])
    parser.add_argument("--epochs", type=int, default=None, help="default: each method's recipe")
    args = parse_args(parser, {"seeds": [0], "tasks": ["speaker"], "epochs": 1})
    results: dict[str, dict[str, list[dict]]] = {}
    for task in args.tasks:
        for method in METHODS:
            for seed in args.seeds:
                found = run(task, method, seed, args.epochs)
                results.setdefault(task, {}).setdefault(method, []).append(found)
                print(f"{task} / {method} / seed {seed}: {found}", flush=True)
    print(f"\nTest accuracy (%), mean ± std over seeds {args.seeds} ({machine()})\n")
    rows = []
    for task, methods in results.items():
        for method, runs in methods.items():
            accs = [r["acc"] for r in runs]
            seconds = statistics.median(r["seconds"] for r in runs)
            rows.append([task, method, mean_std(accs, 100), f"{seconds:.1f} s", str(runs[0]["test_clips"])])
    print(table(["task", "method", "test accuracy (%)", "fit time (median)", "test clips"], rows))
    path = write_json("audio", {"seeds": args.seeds, "results": results})
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
