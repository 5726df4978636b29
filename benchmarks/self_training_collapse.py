"""Self-training's collapse and what prevents it: MNIST -> digits, ImageNet lite0, the shipped optimizer settings.

    python benchmarks/self_training_collapse.py [--seeds 0 1 2]

Trains SelfTraining for 120 steps (3 epochs of 40, 32 px, batches of 32) twice per seed: with the defaults (warm-up on
the source alone, a mean teacher, the class-balance loss) and with the settings it shipped with before (pseudo-labels
from the first step, from the model itself, nothing against imbalance). Reports the share of the target validation
predictions that fall into the most predicted class, and the target accuracy. Without the three measures most target
digits fall into one class. Prints a table and writes ``benchmarks/results/self_training_collapse.json``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import lightning as L
import torch
from _common import parse_args, quiet_trainer, table, write_json

from tlkit.datamodules import MnistDigitsDataModule
from tlkit.strategies import SelfTraining

SETTINGS = {
    "defaults": {},
    "before (no warm-up, teacher or balance)": {"warmup": 0.0, "teacher_decay": 0.0, "balance_weight": 0.0},
}


def target_predictions(settings: dict, seed: int, args: argparse.Namespace) -> tuple[float, float]:
    """The largest class's share of the target validation predictions, and their accuracy."""
    L.seed_everything(seed, verbose=False)
    data = MnistDigitsDataModule(source="mnist", image_size=32, iters_per_epoch=args.iters, batch_size=32, seed=seed)
    model = SelfTraining(
        "tf_efficientnet_lite0",
        backbone_lr_factor=0.5,
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01),
        **settings,
    )
    trainer = quiet_trainer(accelerator="cpu", devices=1, max_epochs=args.epochs, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    model.eval()
    predictions, labels = [], []
    with torch.no_grad():
        for x, y in itertools.islice(data.evaluation_loader("target_val"), args.eval_batches):
            predictions.append(model(x).argmax(dim=1))
            labels.append(y)
    predicted, truth = torch.cat(predictions), torch.cat(labels)
    histogram = torch.bincount(predicted, minlength=10)
    return histogram.max().item() / histogram.sum().item(), (predicted == truth).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iters", type=int, default=40, help="steps per epoch")
    parser.add_argument("--eval-batches", type=int, default=None, help="target validation batches (default: all)")
    args = parse_args(parser, {"epochs": 1, "iters": 2, "eval_batches": 2})
    records, rows = [], []
    for name, settings in SETTINGS.items():
        runs = []
        for seed in args.seeds:
            start = time.perf_counter()
            share, accuracy = target_predictions(settings, seed, args)
            runs.append({"seed": seed, "largest_class_share": share, "target_acc": accuracy})
            print(
                f"{name}, seed {seed}: largest class {share:.1%}, target acc {accuracy:.1%} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        share = statistics.median(r["largest_class_share"] for r in runs)
        accuracy = statistics.median(r["target_acc"] for r in runs)
        records.append({"settings": name, **settings, "runs": runs})
        rows.append([name, f"{share:.1%}", f"{accuracy:.1%}"])
    print(table(["settings", "largest class share (median)", "target acc (median)"], rows))
    path = write_json("self_training_collapse", {"seeds": args.seeds, "results": records})
    print(f"Written: {path}")


if __name__ == "__main__":
    main()
