"""Every use of Lightning's private API in tlkit, in one place, checked against the versions it was written for.

Changing which parameters train in the middle of a fit (`ProgressiveUnfreezing`) needs two things Lightning has no
public hook for: re-wrapping the model in DistributedDataParallel, and telling whether the model is compiled.
`ResumableCheckpoint` overrides three private methods of ModelCheckpoint (refreshing ``last.ckpt`` at every save
point, writing each file atomically), calls two more and sets three of its attributes; `TLKitCLI` overrides three of
LightningCLI's. A Lightning release that renames any of these fails here with a message naming them, not deep inside
a training step or a checkpoint save.
"""

from __future__ import annotations

import gc

import lightning
import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from packaging.version import Version

#: Lightning releases these shims were written and tested for: [first, next minor after the last).
WRITTEN_FOR = (Version("2.4"), Version("2.7"))
#: The private methods tlkit calls or overrides, by class: every one of them, listed (a test keeps this complete).
PRIVATE_API: dict[type, tuple[str, ...]] = {
    DDPStrategy: ("_setup_model", "_register_ddp_hooks"),  # ProgressiveUnfreezing: `rebuild_ddp_wrapper`
    # ResumableCheckpoint: three overridden, two called (whether this step was saved; the metrics a save names).
    ModelCheckpoint: (
        "_monitor_candidates",
        "_save_topk_checkpoint",
        "_save_last_checkpoint",
        "_save_checkpoint",
        "_should_skip_saving_checkpoint",
    ),
    # TLKitCLI: seeding `true` truly at random, the checkpoint's config read before parsing, a refused resume undone,
    # and predict's own `--explain` option on its subcommand's parser.
    LightningCLI: ("_set_seed", "_parse_ckpt_path", "_run_subcommand", "_prepare_subcommand_parser"),
}
#: The private attributes of a ModelCheckpoint that ResumableCheckpoint sets (``kth_value``: the "worst so far"
#: sentinel; ``_last_checkpoint_saved``: what Lightning's own bookkeeping reads after a save) or reads
#: (``_every_n_train_steps``).
PRIVATE_STATE: dict[type, tuple[str, ...]] = {
    ModelCheckpoint: ("kth_value", "_last_checkpoint_saved", "_every_n_train_steps")
}
_warned = False


def check_lightning_version() -> None:
    """Raise if the private API above is gone; warn once if Lightning is newer or older than it was written for."""
    global _warned
    missing = [f"{cls.__name__}.{n}" for cls, names in PRIVATE_API.items() for n in names if not hasattr(cls, n)]
    for cls, names in PRIVATE_STATE.items():
        instance = vars(cls())
        missing += [f"{cls.__name__}.{name}" for name in names if name not in instance]
    if missing:
        raise RuntimeError(
            f"tlkit needs {', '.join(missing)}, which Lightning {lightning.__version__} no longer has; it was "
            f"written for Lightning {WRITTEN_FOR[0]} to below {WRITTEN_FOR[1]}. Install a Lightning in that range, "
            "or upgrade tlkit."
        )
    version = Version(Version(lightning.__version__).base_version)
    if not WRITTEN_FOR[0] <= version < WRITTEN_FOR[1] and not _warned:
        _warned = True
        rank_zero_warn(
            f"tlkit re-wraps DDP and saves checkpoints through Lightning's private API, written for Lightning "
            f"{WRITTEN_FOR[0]} to below {WRITTEN_FOR[1]}; this is {lightning.__version__}."
        )


def validation_follows_this_batch(trainer: pl.Trainer) -> bool:
    """Whether the training batch that just ended is the last of an epoch that ends with validation (as the fit loop
    decides it: validation enabled, and every ``check_val_every_n_epoch``-th epoch)."""
    every = trainer.check_val_every_n_epoch
    validating_epoch = every is None or (trainer.current_epoch + 1) % every == 0
    return (
        bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
        and trainer.enable_validation
        and validating_epoch
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
