"""Run by test_text_strategies.py as a script: Lightning's "ddp" strategy relaunches this file once per extra rank.

Usage: python tests/strategies/ddp_text.py OUT_DIR BERT_FOLDER CSV_FILE
Each rank saves its final weights to OUT_DIR/rank<r>.pt.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.callbacks._helpers import trainer  # noqa: E402
from tlkit.callbacks import LRWarmup, ProgressiveUnfreezing  # noqa: E402
from tlkit.datamodules import TextFileDataModule  # noqa: E402
from tlkit.strategies import FineTuning  # noqa: E402


def main(out_dir: Path, bert: str, csv: str) -> None:
    torch.manual_seed(0)
    net = FineTuning(f"hf:{bert}", lr_decay=0.5)
    callbacks = [ProgressiveUnfreezing(every_n_epochs=1), LRWarmup(duration=2)]
    fit = trainer(out_dir, callbacks, max_epochs=3, devices=2, strategy="ddp")
    fit.fit(net, datamodule=TextFileDataModule(csv, batch_size=8))
    state = {"final": net.state_dict(), "trainable": net.backbone.trainable_group_names}
    torch.save(state, out_dir / f"rank{fit.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
