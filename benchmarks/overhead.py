"""Framework overhead: one fine-tuning epoch of tf_efficientnet_lite0 on DigitsDataModule through tlkit's FineTuning
and Lightning's Trainer, versus a hand-written PyTorch loop doing the same work (same model, param groups, AdamW,
cosine schedule, data, transforms and batch order).

    python benchmarks/overhead.py [--image-size 64] [--repeats 3]

Runs the two alternately and prints the median epoch times and their ratio (goal: <= 1.05); writes
benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from _common import machine, parse_args, table, write_json

from tlkit.datamodules import DigitsDataModule
from tlkit.strategies import FineTuning


def setup(args):
    L.seed_everything(0, verbose=False)
    model = FineTuning(optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3), num_classes=10)
    data = DigitsDataModule(
        image_size=args.image_size, batch_size=args.batch_size, labels_per_class=args.labels_per_class
    )
    data.data_config = model.backbone.data_config
    data.setup()
    return model, data


def tlkit_epoch(args) -> float:
    model, data = setup(args)
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - started


def plain_epoch(args) -> float:
    model, data = setup(args)
    loader = data.train_dataloader()
    started = time.perf_counter()
    groups = model.param_groups()
    scales = [g.pop("lr_scale") for g in groups]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    for group, scale in zip(optimizer.param_groups, scales):
        group["lr"] = 1e-3 * scale
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(loader))
    model.train()
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model.head(model.backbone(x)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--labels-per-class", type=int, default=None, help="default: every training image")
    args = parse_args(parser, {"image_size": 32, "repeats": 1, "labels_per_class": 2})
    times = {"plain PyTorch loop": [], "tlkit FineTuning + Trainer": []}
    for _ in range(args.repeats):
        times["plain PyTorch loop"].append(plain_epoch(args))
        times["tlkit FineTuning + Trainer"].append(tlkit_epoch(args))
    plain = statistics.median(times["plain PyTorch loop"])
    rows = [[name, f"{statistics.median(t):.1f} s", f"{statistics.median(t) / plain:.3f}"] for name, t in times.items()]
    print(
        f"\nOverhead: one fine-tuning epoch, tf_efficientnet_lite0 on DigitsDataModule ({args.image_size} px, "
        f"batch {args.batch_size}), median of {args.repeats} alternating runs ({machine()})"
    )
    print(table(["run", "epoch time", "ratio"], rows))
    print(f"JSON: {write_json('overhead', {'args': vars(args), 'seconds': times})}")


if __name__ == "__main__":
    main()
