"""Linear probe: 20 epochs of FeatureExtraction with the feature cache, without it, and Lightning's
BackboneFinetuning-style frozen training, against the floor of one backbone forward pass over the training data.

    python benchmarks/linear_probe.py [--epochs 20] [--image-size 64] [--repeats 1]

Prints a Markdown table (wall time of fit, ratio to the cached run and to the floor, test accuracy) and writes
benchmarks/results/linear_probe.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from _common import machine, table, write_json
from lightning.pytorch.callbacks import BackboneFinetuning

from tlkit.datamodules import DigitsDataModule
from tlkit.feature_cache import FeatureCache
from tlkit.strategies import FeatureExtraction, TransferModule


def data(args) -> DigitsDataModule:
    return DigitsDataModule(image_size=args.image_size, batch_size=args.batch_size, augment=False)


def fit_and_test(model, callbacks, args) -> tuple[float, float]:
    L.seed_everything(0, verbose=False)
    dm = data(args)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - started
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    return seconds, result["test/acc"]


def optimizer(args):
    return lambda params: torch.optim.AdamW(params, lr=args.lr)


def cached(args):
    FeatureCache._memory.clear()  # measure the cost of computing the cache, not of reusing it
    return fit_and_test(FeatureExtraction(optimizer=optimizer(args), cache_features="memory"), [], args)


def uncached(args):
    return fit_and_test(FeatureExtraction(optimizer=optimizer(args), cache_features="off"), [], args)


def lightning_backbone_finetuning(args):
    # Lightning's callback freezes the backbone until `unfreeze_backbone_at_epoch`; the frozen backbone still runs
    # (with BatchNorm in train mode) on every step.
    model = TransferModule(optimizer=optimizer(args))
    return fit_and_test(model, [BackboneFinetuning(unfreeze_backbone_at_epoch=args.epochs + 1)], args)


def floor(args) -> float:
    """One backbone forward pass over the training images (eval mode, no_grad): the cost a cache cannot avoid."""
    model = FeatureExtraction(cache_features="off")
    dm = data(args)
    dm.data_config = model.backbone.data_config
    dm.setup()
    model.backbone.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for x, _ in torch.utils.data.DataLoader(dm.dataset("train"), batch_size=128):
            model.backbone(x)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    runs = {
        "cached": cached,
        "uncached": uncached,
        "Lightning BackboneFinetuning (frozen)": lightning_backbone_finetuning,
    }
    results = {name: [] for name in runs}
    floors = []
    for _ in range(args.repeats):  # interleaved, so machine noise hits every variant alike
        floors.append(floor(args))
        for name, run in runs.items():
            results[name].append(run(args))
    floor_s = statistics.median(floors)
    cached_s = statistics.median(s for s, _ in results["cached"])
    rows = [["one backbone pass over train (floor)", f"{floor_s:.1f} s", f"{floor_s / cached_s:.2f}x", "1.00x", "-"]]
    summary = {"floor_seconds": floor_s}
    for name, values in results.items():
        seconds = statistics.median(s for s, _ in values)
        accuracy = statistics.median(a for _, a in values)
        summary[name] = {"seconds": seconds, "test_acc": accuracy}
        rows.append(
            [
                f"FeatureExtraction, {name}" if name in ("cached", "uncached") else name,
                f"{seconds:.1f} s",
                f"{seconds / cached_s:.2f}x",
                f"{seconds / floor_s:.2f}x",
                f"{accuracy:.3f}",
            ]
        )
    print(
        f"\nLinear probe: tf_efficientnet_lite0 (ImageNet, frozen), DigitsDataModule {args.image_size} px, "
        f"{args.epochs} epochs, median of {args.repeats} ({machine()})"
    )
    print(table(["run", "fit wall time", "vs cached", "vs floor", "test accuracy"], rows))
    print(f"JSON: {write_json('linear_probe', {'args': vars(args), 'summary': summary})}")


if __name__ == "__main__":
    main()
