"""Domain adaptation on the bundled DigitsM shift (digits -> digits on photo patches) with the pretrained
EfficientNet-Lite0: target test accuracy of each method over several seeds.

    python benchmarks/domain_adaptation.py [--seeds 0 1 2 3 4] [--epochs 6] [--iters 40] [--methods SourceOnly DANN ...]

Each run selects its checkpoint without target labels (best ``val/im``) and is tested on the target test split.
Prints a Markdown table (mean and std over seeds, wall time) and writes benchmarks/results/domain_adaptation.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tlkit.datamodules import DigitsMDataModule
from tlkit.strategies import CDAN, DANN, MCC, JointTraining, SelfTraining, SourceOnly

# name -> (strategy class, extra init args, target labels)
METHODS = {
    "SourceOnly": (SourceOnly, {}, "none"),
    "DANN": (DANN, {}, "none"),
    "CDAN": (CDAN, {}, "none"),
    "MCC": (MCC, {}, "none"),
    "SelfTraining": (SelfTraining, {}, "none"),
    "Oracle (target labels)": (JointTraining, {"source_weight": 0.0}, "all"),
}


def run(name: str, seed: int, args: argparse.Namespace, out_dir: Path) -> dict:
    cls, extra, target_labels = METHODS[name]
    L.seed_everything(seed, verbose=False)
    started = time.perf_counter()
    data = DigitsMDataModule(
        image_size=args.image_size,
        iters_per_epoch=args.iters,
        batch_size=args.batch_size,
        target_labels=target_labels,
        seed=seed,
    )
    model = cls(
        backbone="tf_efficientnet_lite0",
        weights="imagenet",
        backbone_lr_factor=args.backbone_lr_factor,
        optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01),
        **extra,
    )
    metric, mode = model.checkpoint_monitor
    checkpoint = ModelCheckpoint(dirpath=out_dir / f"{cls.__name__}-{seed}", monitor=metric, mode=mode)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)
    return {"method": name, "seed": seed, "target_acc": result["test/acc"], "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iters", type=int, default=40, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--backbone-lr-factor", type=float, default=0.5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    results_dir = Path(__file__).parent / "results"
    out = results_dir / "domain_adaptation.json"
    results_dir.mkdir(exist_ok=True)
    # Each finished run is saved at once; a rerun with the same settings skips the runs already done.
    settings = {k: v for k, v in vars(args).items() if k not in ("seeds", "methods")}
    previous = json.loads(out.read_text()) if out.is_file() else {}
    runs = [r for r in previous.get("runs", []) if previous.get("settings") == settings]
    for name in args.methods:
        for seed in args.seeds:
            if any(r["method"] == name and r["seed"] == seed for r in runs):
                continue
            runs.append(run(name, seed, args, results_dir / "da_checkpoints"))
            out.write_text(json.dumps({"settings": settings, "runs": runs}, indent=2))
    runs = [r for r in runs if r["method"] in args.methods and r["seed"] in args.seeds]

    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(
        f"\nDigitsM, tf_efficientnet_lite0 (ImageNet), {args.image_size} px, {args.epochs} epochs x {args.iters} "
        f"steps, batch {args.batch_size} per domain, seeds {args.seeds}, CPU ({machine})"
    )
    print("| method | target test accuracy (mean +- std) | wall time per run |")
    print("|---|---|---|")
    summary = {}
    for name in args.methods:
        accs = [r["target_acc"] for r in runs if r["method"] == name]
        secs = [r["seconds"] for r in runs if r["method"] == name]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        summary[name] = {"mean": statistics.mean(accs), "std": std, "seconds": statistics.median(secs)}
        print(f"| {name} | {100 * summary[name]['mean']:.1f} +- {100 * std:.1f} | {summary[name]['seconds']:.0f} s |")
    if {"SourceOnly", "Oracle (target labels)"} <= summary.keys():
        low, high = summary["SourceOnly"]["mean"], summary["Oracle (target labels)"]["mean"]
        unsupervised = [n for n in summary if n not in ("SourceOnly", "Oracle (target labels)")]
        if unsupervised and high > low:
            best = max(unsupervised, key=lambda n: summary[n]["mean"])
            recovered = (summary[best]["mean"] - low) / (high - low)
            print(f"Best unsupervised method: {best}, recovering {100 * recovered:.0f}% of the SourceOnly-oracle gap.")
    payload = {"settings": settings, "machine": machine, "runs": runs, "summary": summary}
    out.write_text(json.dumps(payload, indent=2))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
