"""Run by test_ddp_domain_adaptation.py as a script: 2 CPU ranks forked from it ("ddp_fork": the DDP strategy and
wrapper users get from "ddp", without a second interpreter's start-up; the console-script run of DANN in
tests/test_multi_device.py uses "ddp").

Usage: python tests/strategies/ddp_domain_adaptation.py OUT_DIR STRATEGY [SOURCE_CHECKPOINT]
Each rank saves its initial and final weights to OUT_DIR/rank<r>.pt (and SHOT's pseudo-labels).
"""

import sys
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests._rank_weights import SaveRankWeights  # noqa: E402
from tlkit import strategies  # noqa: E402
from tlkit.datamodules import DigitsMDataModule  # noqa: E402


class SaveRankState(SaveRankWeights):
    """Each rank's weights and SHOT's pseudo-labels (computed on every rank)."""

    def extra(self, pl_module) -> dict:
        return {"pseudo_labels": pl_module.pseudo_labels if isinstance(pl_module, strategies.SHOT) else None}


def main(out_dir: Path, strategy: str, source_checkpoint: str | None) -> None:
    L.seed_everything(0, verbose=False)
    extra = {"source_checkpoint": source_checkpoint} if strategy == "SHOT" else {"weights": None}
    if strategy == "SelfTraining":
        extra["warmup"] = 0.2  # pseudo-labels, teacher and distribution alignment all active within the run
    model = getattr(strategies, strategy)("test_efficientnet", num_classes=10, **extra)
    data = DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=4)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        callbacks=[SaveRankState(str(out_dir))],
        max_epochs=2,
        limit_val_batches=2,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
