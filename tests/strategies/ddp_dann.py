"""Run by test_ddp_dann.py as a script: Lightning's "ddp" strategy relaunches this file once per extra rank.

Usage: python tests/strategies/ddp_dann.py OUT_DIR
Each rank saves its initial and final weights to OUT_DIR/rank<r>.pt.
"""

import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tlkit.datamodules import DigitsMDataModule  # noqa: E402
from tlkit.strategies import DANN  # noqa: E402


def main(out_dir: Path) -> None:
    L.seed_everything(0, verbose=False)
    model = DANN("test_efficientnet", weights=None, num_classes=10)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    data = DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=4)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        limit_val_batches=2,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    torch.save({"initial": initial, "final": model.state_dict()}, out_dir / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
