"""A callback that saves what each DDP rank holds, for a test to compare across ranks of a console-script run."""

from pathlib import Path

import torch
from lightning.pytorch import Callback


class SaveRankWeights(Callback):
    """Each rank writes ``<out_dir>/rank<r>.pt``: its weights when fit starts and when it ends, and the backbone's
    layer groups that train at the end."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.initial: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.initial = {name: tensor.detach().clone() for name, tensor in pl_module.state_dict().items()}

    def on_fit_end(self, trainer, pl_module) -> None:
        saved = {
            "initial": self.initial,
            "final": pl_module.state_dict(),
            "trainable": pl_module.backbone.trainable_group_names,
            **self.extra(pl_module),
        }
        torch.save(saved, self.out_dir / f"rank{trainer.global_rank}.pt")

    def extra(self, pl_module) -> dict:
        """What else a test compares across ranks (a subclass's choice)."""
        return {}
