"""Keeping DDP and torch.compile consistent when the set of trainable parameters changes mid-fit."""

from __future__ import annotations

import gc

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy


def rebuild_ddp_wrapper(trainer: pl.Trainer) -> bool:
    """Wrap the LightningModule in a new DistributedDataParallel after ``requires_grad`` changed.

    DDP decides which parameters it all-reduces when it wraps the model: a parameter frozen at that moment is never
    reduced later, so after an unfreeze every rank would step on its own local gradient and the ranks drift apart.
    A fresh wrapper registers the now-trainable parameters (and broadcasts rank 0's weights, which are identical on
    every rank anyway). It costs one wrapper construction per phase change, and every step in between pays nothing
    extra, unlike ``find_unused_parameters=True``, which walks the autograd graph on every step.

    Returns:
        Whether a wrapper was rebuilt (False when not running under DDP).
    """
    strategy = trainer.strategy
    if not isinstance(strategy, DDPStrategy) or strategy.model is strategy.lightning_module:
        return False
    old = strategy.model
    strategy.model = strategy._setup_model(strategy.lightning_module)
    strategy._register_ddp_hooks()
    # The old wrapper's reducer holds autograd hooks on every parameter; free it now so they are removed before the
    # next backward pass.
    del old
    gc.collect()
    return True


def reset_compiled_graphs() -> None:
    """Drop TorchDynamo's cached graphs: they were traced with the previous ``requires_grad`` flags."""
    import torch._dynamo

    torch._dynamo.reset()
