"""Precision and memory format: training-step time of FineTuning tf_efficientnet_lite0 with Trainer(precision=...)
32-true versus bf16-mixed, each with and without channels_last.

    python benchmarks/precision.py [--image-size 128] [--batch-size 32] [--steps 8]

Prints a Markdown table of median step times and their ratio to 32-true, and writes benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from _common import machine, parse_args, table, write_json
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from tlkit.strategies import FineTuning


class StepTimer(Callback):
    def __init__(self):
        self.times, self._started = [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._started)


class ChannelsLastFineTuning(FineTuning):
    """FineTuning with NHWC weights and inputs."""

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        return x.contiguous(memory_format=torch.channels_last), y


def step_time(precision: str, channels_last: bool, args) -> float:
    L.seed_everything(0, verbose=False)
    cls = ChannelsLastFineTuning if channels_last else FineTuning
    model = cls(num_classes=10, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    n = args.batch_size * (args.steps + 2)
    data = TensorDataset(torch.randn(n, 3, args.image_size, args.image_size), torch.randint(0, 10, (n,)))
    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=args.steps + 2,
        precision=precision,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=args.batch_size))
    return statistics.median(timer.times[2:])  # the first two steps warm up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    args = parse_args(parser, {"image_size": 32, "batch_size": 4, "steps": 1})
    variants = [(p, cl) for p in ("32-true", "bf16-mixed") for cl in (False, True)]
    results = {f"{p}{' + channels_last' if cl else ''}": step_time(p, cl, args) for p, cl in variants}
    base = results["32-true"]
    rows = [[name, f"{1000 * s:.0f} ms", f"{s / base:.2f}x"] for name, s in results.items()]
    print(
        f"\nPrecision: FineTuning tf_efficientnet_lite0, {args.image_size} px, batch {args.batch_size}, "
        f"median of {args.steps} steps ({machine()})"
    )
    print(table(["precision", "step time", "vs 32-true"], rows))
    print(f"JSON: {write_json('precision', {'args': vars(args), 'seconds_per_step': results})}")


if __name__ == "__main__":
    main()
