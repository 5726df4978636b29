"""Calibration: the expected calibration error (15 bins) of fine-tuned classifiers on their test split, before and
after temperature scaling fitted on the validation split (`temperature_scaling: true`).

    python benchmarks/calibration.py [--seeds 0 1 2] [--tasks digits rotten_tomatoes]

Recipes: digits as the demo (`configs/digits_finetune.yaml`: EfficientNet-Lite0, ImageNet weights, 64 px, 10 labels
per class, 30 epochs, augmentation on); Rotten Tomatoes as `configs/text_finetune.yaml` with 100 labels per class
(all-MiniLM-L6-v2, 10 epochs, the head at 5e-4, each layer below at half the rate above it). The model is the one at
the end of training, with the temperature its last validation fitted. Goal: temperature scaling at least halves
the ECE on both. Writes benchmarks/results/calibration.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from _common import machine, mean_std, parse_args, quiet_trainer, table, write_json

from tlkit.datamodules import DigitsDataModule, RottenTomatoesDataModule
from tlkit.strategies import FineTuning

TASKS = ("digits", "rotten_tomatoes")


def recipe(task: str) -> tuple[FineTuning, L.LightningDataModule, int]:
    if task == "digits":
        model = FineTuning("tf_efficientnet_lite0", lr_decay=0.75, temperature_scaling=True)
        return model, DigitsDataModule(image_size=64, labels_per_class=10), 30
    optimizer = lambda params: torch.optim.AdamW(params, lr=5e-4, weight_decay=0.01)  # noqa: E731
    model = FineTuning(
        "hf:sentence-transformers/all-MiniLM-L6-v2", lr_decay=0.5, optimizer=optimizer, temperature_scaling=True
    )
    return model, RottenTomatoesDataModule(labels_per_class=100, max_length=64), 10


def run(task: str, seed: int, epochs: int | None) -> dict[str, float]:
    L.seed_everything(seed, verbose=False)
    model, data, recipe_epochs = recipe(task)
    epochs = epochs or recipe_epochs
    started = time.perf_counter()
    trainer = quiet_trainer(max_epochs=epochs)
    trainer.fit(model, datamodule=data)
    result = trainer.test(model, datamodule=data, verbose=False)[0]
    return {
        "acc": result["test/acc"],
        "ece_unscaled": result["test/ece_unscaled"],
        "ece": result["test/ece"],
        "temperature": float(model.calibration_temperature),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--epochs", type=int, default=None, help="default: each task's recipe (30 digits, 10 text)")
    args = parse_args(parser, {"seeds": [0, 1], "epochs": 1})
    runs = {task: [run(task, seed, args.epochs) for seed in args.seeds] for task in args.tasks}
    rows = []
    for task, results in runs.items():
        ratio = [r["ece_unscaled"] / max(r["ece"], 1e-12) for r in results]
        rows.append(
            [
                task,
                mean_std([r["acc"] for r in results], 100),
                mean_std([r["ece_unscaled"] for r in results], 100),
                mean_std([r["ece"] for r in results], 100),
                f"{statistics.median(ratio):.2f}x",
                mean_std([r["temperature"] for r in results], digits=2),
                str(len(results)),
            ]
        )
    header = ["task", "test accuracy %", "ECE % before", "ECE % after", "ECE reduction (median)", "temperature"]
    print(f"\nCalibration, {machine()}, seeds {args.seeds}\n")
    print(table([*header, "seeds"], rows))
    path = write_json("calibration", {"seeds": args.seeds, "runs": runs})
    print(f"\nWritten: {path}")


if __name__ == "__main__":
    main()
