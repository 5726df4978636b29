"""A tiny, fully deterministic fine-tuning setup for callback tests (also used by the DDP script)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tlkit.datamodules import EpochShuffleSampler
from tlkit.randomness import sample_seed, seeded
from tlkit.strategies import FineTuning

NUM_CLASSES = 4


class NoisyDataset(TensorDataset):
    """Random augmentation as tlkit's datasets do it: drawn under the seed the training index carries."""

    def __getitem__(self, index):
        x, y = super().__getitem__(index)
        with seeded(sample_seed(index)):
            return x + 0.1 * torch.randn_like(x), y


def loaders(
    n: int = 32, size: int = 32, batch_size: int = 8, seed: int = 0, augment: bool = False
) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    train = (NoisyDataset if augment else TensorDataset)(x, y)
    val = TensorDataset(x[: n // 2] + 0.1, y[: n // 2])
    return (
        DataLoader(train, batch_size=batch_size, sampler=EpochShuffleSampler(n, seed)),
        DataLoader(val, batch_size=batch_size),
    )


def model(weight_decay: float = 0.05, lr: float = 0.01, **kwargs) -> FineTuning:
    L.seed_everything(0, verbose=False)
    return FineTuning(
        "test_resnet",
        weights=None,
        num_classes=NUM_CLASSES,
        lr_decay=0.5,
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
        **kwargs,
    )


def trainer(tmp_path, callbacks, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=6,
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    return L.Trainer(callbacks=callbacks, **{**defaults, **kwargs})


def max_difference(a: dict, b: dict) -> float:
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a.values(), b.values()))
