"""Tasks beyond one label: multi-label (which digits appear) and regression (their sum) on the bundled canvases of two
to four real handwritten digits, pretrained versus random init and FeatureExtraction versus FineTuning.

    python benchmarks/tasks.py [--seeds 0 1 2] [--tasks multilabel regression] [--strategies feature_extraction
        fine_tuning] [--num_images 1000]

Recipe: EfficientNet-Lite0 (ImageNet weights from the bundled package, or random init), 64 px canvases
(`MultiDigitsDataModule`, `num_images` canvases composed from disjoint pools of scikit-learn's digits: 65% train,
15% validation, 20% test). FeatureExtraction: a linear head on cached features, 20 epochs at lr 1e-2, no
augmentation. FineTuning: every layer group, lr 3e-3 with a 0.75 decay per group, 6 epochs, augmentation on (crops
keep 80% of the canvas or more). Multi-label runs with temperature scaling on, so the test split's ECE is reported
before and after it (every (canvas, label) probability as one binary prediction); thresholds are chosen per label
on validation. Regression uses the Huber loss on the standardised sum. The model is the one at the end of training.
Goal: pretrained clearly above random init on every task. Writes benchmarks/results/tasks.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from _common import machine, mean_std, parse_args, quiet_trainer, table, write_json

from tlkit.datamodules import MultiDigitsDataModule
from tlkit.strategies import FeatureExtraction, FineTuning
from tlkit.tasks import MultiLabel, Regression

TASKS = ("multilabel", "regression")
STRATEGIES = ("feature_extraction", "fine_tuning")
INITS = ("imagenet", "random")
#: The metrics reported per task, in the table's order (which way each is better is the task's: its header says).
METRICS = {
    "multilabel": ["test/map", "test/f1_micro", "test/exact_match"],
    "regression": ["test/mae", "test/rmse", "test/r2"],
}


def arrow(task: str, metric: str) -> str:
    """``↑`` or ``↓``: the direction the task gives ``metric``."""
    directions = (MultiLabel() if task == "multilabel" else Regression()).metric_directions()
    return "↑" if directions[metric.split("/", 1)[1]] == "max" else "↓"


def run(task: str, strategy: str, init: str, seed: int, num_images: int, epochs: int | None) -> dict[str, float]:
    L.seed_everything(seed, verbose=False)
    feature_extraction = strategy == "feature_extraction"
    lr, recipe_epochs = (1e-2, 20) if feature_extraction else (3e-3, 6)
    epochs = epochs or recipe_epochs
    options = dict(
        weights="imagenet" if init == "imagenet" else None,
        task=MultiLabel() if task == "multilabel" else Regression(loss="huber"),
        temperature_scaling=task == "multilabel",
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01),
    )
    if feature_extraction:
        model = FeatureExtraction("tf_efficientnet_lite0", **options)
    else:
        model = FineTuning("tf_efficientnet_lite0", lr_decay=0.75, **options)
    data = MultiDigitsDataModule(
        targets="labels" if task == "multilabel" else "sum",
        num_images=num_images,
        image_size=64,
        batch_size=32,
        augment=not feature_extraction,
        seed=seed,
    )
    started = time.perf_counter()
    trainer = quiet_trainer(max_epochs=epochs)
    trainer.fit(model, datamodule=data)
    result = trainer.test(model, datamodule=data, verbose=False)[0]
    return {**{k: float(v) for k, v in result.items()}, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=None, help="default: 20 feature extraction, 6 fine-tuning")
    args = parse_args(parser, {"seeds": [0], "num_images": 40, "epochs": 1})
    runs: dict[str, list[dict[str, float]]] = {}
    for task in args.tasks:
        for strategy in args.strategies:
            for init in INITS:
                key = f"{task}/{strategy}/{init}"
                runs[key] = [run(task, strategy, init, seed, args.num_images, args.epochs) for seed in args.seeds]
                print(f"{key}: {runs[key]}", flush=True)
    print(f"\nTasks on the bundled digit canvases, {machine()}, seeds {args.seeds}, {args.num_images} canvases\n")
    for task in args.tasks:
        metrics = METRICS[task]
        scale, digits = (100.0, 1) if task == "multilabel" else (1.0, 2)  # multi-label metrics as percentages
        rows = []
        for strategy in args.strategies:
            for init in INITS:
                results = runs[f"{task}/{strategy}/{init}"]
                cells = [mean_std([r[name] for r in results], scale, digits) for name in metrics]
                if task == "multilabel":
                    cells += [
                        mean_std([r["test/ece_unscaled"] for r in results], 100),
                        mean_std([r["test/ece"] for r in results], 100),
                    ]
                cells.append(f"{statistics.median(r['seconds'] for r in results):.0f}")
                rows.append([strategy, init, *cells])
        header = [
            "strategy",
            "init",
            *(f"{name.split('/')[1]} {arrow(task, name)}{' %' if task == 'multilabel' else ''}" for name in metrics),
        ]
        if task == "multilabel":
            header += ["ECE % before", "ECE % after"]
        print(f"\n{task}\n")
        print(table([*header, "seconds (median)"], rows))
    path = write_json("tasks", {"seeds": args.seeds, "num_images": args.num_images, "runs": runs})
    print(f"\nWritten: {path}")


if __name__ == "__main__":
    main()
