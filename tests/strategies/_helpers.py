"""Shared by the strategy tests: one seeded fit of a domain-adaptation model, for exact-resume comparisons."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L

from tests.conftest import quiet_trainer


def seeded_fit(make_model: Callable[[], L.LightningModule], data, root, ckpt_path=None, callbacks: Sequence = ()):
    """Fit ``make_model()`` on ``data`` for 3 epochs from seed 0 (checkpointing only through ``callbacks``)."""
    L.seed_everything(0, verbose=False)
    model = make_model()
    trainer = quiet_trainer(
        max_epochs=3,
        limit_val_batches=1,
        callbacks=list(callbacks),
        default_root_dir=root,
        enable_checkpointing=bool(callbacks),
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model
