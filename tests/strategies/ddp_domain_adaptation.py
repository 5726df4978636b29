"""Run by test_ddp_domain_adaptation.py as a script: Lightning's "ddp" strategy relaunches this file once per extra
rank.

Usage: python tests/strategies/ddp_domain_adaptation.py OUT_DIR STRATEGY [SOURCE_CHECKPOINT]
Each rank saves its initial and final weights to OUT_DIR/rank<r>.pt (and SHOT's pseudo-labels).
"""

import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tlkit import strategies  # noqa: E402
from tlkit.datamodules import DigitsMDataModule  # noqa: E402


def main(out_dir: Path, strategy: str, source_checkpoint: str | None) -> None:
    L.seed_everything(0, verbose=False)
    extra = {"source_checkpoint": source_checkpoint} if strategy == "SHOT" else {"weights": None}
    if strategy == "SelfTraining":
        extra["warmup"] = 0.2  # pseudo-labels, teacher and distribution alignment all active within the run
    model = getattr(strategies, strategy)("test_efficientnet", num_classes=10, **extra)
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
    labels = model.pseudo_labels if strategy == "SHOT" else None
    saved = {"initial": initial, "final": model.state_dict(), "pseudo_labels": labels}
    torch.save(saved, out_dir / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
