"""Every use of Lightning's private API in tlkit, in one place, checked against the versions it was written for.

Changing which parameters train in the middle of a fit (`ProgressiveUnfreezing`) needs two things Lightning has no
public hook for: re-wrapping the model in DistributedDataParallel, and telling whether the model is compiled. A
Lightning release that renames these fails here with a message naming them, not deep inside a training step.
"""

from __future__ import annotations

import gc

import lightning
import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from packaging.version import Version

#: Lightning releases these shims were written and tested for: [first, next minor after the last).
WRITTEN_FOR = (Version("2.4"), Version("2.7"))
_PRIVATE_DDP_API = ("_setup_model", "_register_ddp_hooks")
_warned = False


def check_lightning_version() -> None:
    """Raise if the private API below is gone; warn once if Lightning is newer or older than it was written for."""
    global _warned
    missing = [name for name in _PRIVATE_DDP_API if not hasattr(DDPStrategy, name)]
    if missing:
        raise RuntimeError(
            f"tlkit's ProgressiveUnfreezing needs DDPStrategy.{', DDPStrategy.'.join(missing)}, which Lightning "
            f"{lightning.__version__} no longer has; it was written for Lightning {WRITTEN_FOR[0]} to below "
            f"{WRITTEN_FOR[1]}. Install a Lightning in that range, or upgrade tlkit."
        )
    version = Version(Version(lightning.__version__).base_version)
    if not WRITTEN_FOR[0] <= version < WRITTEN_FOR[1] and not _warned:
        _warned = True
        rank_zero_warn(
            f"tlkit's ProgressiveUnfreezing re-wraps DDP through Lightning's private API, written for Lightning "
            f"{WRITTEN_FOR[0]} to below {WRITTEN_FOR[1]}; this is {lightning.__version__}."
        )


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
    check_lightning_version()
    old = strategy.model
    strategy.model = strategy._setup_model(strategy.lightning_module)
    strategy._register_ddp_hooks()
    # The old wrapper's reducer holds autograd hooks on every parameter; free it now so they are removed before the
    # next backward pass.
    del old
    gc.collect()
    return True


def is_compiled(trainer: pl.Trainer) -> bool:
    """Whether the model runs under ``torch.compile`` (wrapped by the strategy, or compiled by Lightning)."""
    from torch._dynamo.eval_frame import OptimizedModule

    module = trainer.lightning_module
    return isinstance(trainer.strategy.model, OptimizedModule) or bool(vars(module).get("_compiler_ctx"))


def reset_compiled_graphs() -> None:
    """Drop TorchDynamo's cached graphs: they were traced with the previous ``requires_grad`` flags."""
    import torch._dynamo

    torch._dynamo.reset()
