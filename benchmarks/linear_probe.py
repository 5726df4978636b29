"""Linear probe: 20 epochs of FeatureExtraction with the feature cache, without it, and Lightning's
BackboneFinetuning-style frozen training, against the floor of one backbone forward pass over the training data.
Then LP-FT (ProgressiveUnfreezing: head-only epochs, then everything) with its head-only phase cached and not.

    python benchmarks/linear_probe.py [--epochs 20] [--image-size 64] [--repeats 1] [--lp-ft-epochs 10 2]

Prints two Markdown tables (wall time of fit, ratios, test accuracy) and writes benchmarks/results/linear_probe.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from _common import machine, parse_args, quiet_trainer, table, write_json
from lightning.pytorch.callbacks import BackboneFinetuning

from tlkit.callbacks import ProgressiveUnfreezing
from tlkit.datamodules import DigitsDataModule
from tlkit.features import FeatureCache, compute_features
from tlkit.strategies import FeatureExtraction, FineTuning, TransferModule


def data(args) -> DigitsDataModule:
    return DigitsDataModule(
        image_size=args.image_size, batch_size=args.batch_size, augment=False, labels_per_class=args.labels_per_class
    )


def fit_and_test(model, callbacks, args, epochs: int | None = None) -> tuple[float, float]:
    L.seed_everything(0, verbose=False)
    dm = data(args)
    trainer = quiet_trainer(max_epochs=epochs or args.epochs, callbacks=callbacks)
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - started
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    return seconds, result["test/acc"]


def optimizer(args):
    return lambda params: torch.optim.AdamW(params, lr=args.lr)


def cached(args):
    FeatureCache.memory.clear()  # measure the cost of computing the cache, not of reusing it
    return fit_and_test(FeatureExtraction(optimizer=optimizer(args), cache_features="memory"), [], args)


def uncached(args):
    return fit_and_test(FeatureExtraction(optimizer=optimizer(args), cache_features="off"), [], args)


def lightning_backbone_finetuning(args):
    # Lightning's callback freezes the backbone until `unfreeze_backbone_at_epoch`; the frozen backbone still runs
    # (with BatchNorm in train mode) on every step.
    model = TransferModule(optimizer=optimizer(args))
    return fit_and_test(model, [BackboneFinetuning(unfreeze_backbone_at_epoch=args.epochs + 1)], args)


def lp_ft(cache_features: str, args) -> tuple[float, float]:
    FeatureCache.memory.clear()
    head_epochs, all_epochs = args.lp_ft_epochs
    unfreezing = ProgressiveUnfreezing(milestones={head_epochs: "all"}, cache_features=cache_features)
    # freeze_bn: the head learns on features made with the backbone's running BatchNorm statistics; switching the
    # unfrozen groups to batch statistics would change those features under it (val accuracy 0.89 -> 0.30 here).
    model = FineTuning(lr_decay=0.5, freeze_bn=True, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))
    return fit_and_test(model, [unfreezing], args, epochs=head_epochs + all_epochs)


def floor(args, nhwc: bool = False) -> float:
    """One backbone forward pass over the training images (eval mode, no_grad): the cost a cache cannot avoid.

    ``nhwc``: FeatureCache's own pass (channels-last weights and inputs under inference_mode).
    """
    model = FeatureExtraction(cache_features="off")
    dm = data(args)
    dm.data_config = model.backbone.data_config
    dm.setup()
    backbone, train = model.backbone.eval(), dm.dataset("train")
    started = time.perf_counter()
    if nhwc:
        compute_features(backbone, train, batch_size=128)
    else:
        with torch.no_grad():
            for x, _ in torch.utils.data.DataLoader(train, batch_size=128):
                backbone(x)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--lp-ft-epochs", type=int, nargs=2, default=[10, 2], metavar=("HEAD", "ALL"), help="LP-FT epochs per phase"
    )
    parser.add_argument("--labels-per-class", type=int, default=None, help="default: every training image")
    args = parse_args(parser, {"epochs": 1, "image_size": 32, "lp_ft_epochs": [1, 1], "labels_per_class": 3})
    runs = {
        "floor": lambda a: (floor(a), None),
        "floor, channels_last": lambda a: (floor(a, nhwc=True), None),
        "cached": cached,
        "uncached": uncached,
        "Lightning BackboneFinetuning (frozen)": lightning_backbone_finetuning,
        "LP-FT, head phase cached": lambda a: lp_ft("memory", a),
        "LP-FT, head phase uncached": lambda a: lp_ft("off", a),
    }
    results = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every variant alike
        for name, run in runs.items():
            results[name].append(run(args))
    summary = {
        name: {
            "seconds": statistics.median(s for s, _ in values),
            "test_acc": None if values[0][1] is None else statistics.median(a for _, a in values),
        }
        for name, values in results.items()
    }
    seconds = {name: v["seconds"] for name, v in summary.items()}
    labels = {
        "floor": "one backbone pass over train (floor)",
        "floor, channels_last": "the same pass, channels_last + inference_mode (as the cache runs it)",
        "cached": "FeatureExtraction, cached",
        "uncached": "FeatureExtraction, uncached",
    }
    rows = []
    for name in ("floor", "floor, channels_last", "cached", "uncached", "Lightning BackboneFinetuning (frozen)"):
        accuracy = summary[name]["test_acc"]
        rows.append(
            [
                labels.get(name, name),
                f"{seconds[name]:.1f} s",
                f"{seconds[name] / seconds['cached']:.2f}x",
                f"{seconds[name] / seconds['floor']:.2f}x",
                f"{seconds[name] / seconds['floor, channels_last']:.2f}x",
                "-" if accuracy is None else f"{accuracy:.3f}",
            ]
        )
    print(
        f"\nLinear probe: tf_efficientnet_lite0 (ImageNet, frozen), DigitsDataModule {args.image_size} px, "
        f"{args.epochs} epochs, median of {args.repeats} ({machine()})"
    )
    print(table(["run", "fit wall time", "vs cached", "vs floor", "vs channels_last floor", "test accuracy"], rows))
    head, full = args.lp_ft_epochs
    lp_ft_rows = [
        [
            name,
            f"{seconds[name]:.1f} s",
            f"{seconds[name] / seconds['LP-FT, head phase cached']:.2f}x",
            f"{summary[name]['test_acc']:.3f}",
        ]
        for name in ("LP-FT, head phase cached", "LP-FT, head phase uncached")
    ]
    print(f"\nLP-FT: FineTuning + ProgressiveUnfreezing(milestones={{{head}: all}}), {head} + {full} epochs")
    print(table(["run", "fit wall time", "vs cached", "test accuracy"], lp_ft_rows))
    print(f"JSON: {write_json('linear_probe', {'args': vars(args), 'summary': summary})}")


if __name__ == "__main__":
    main()
