"""Run by test_ddp.py as a script: 2 CPU ranks forked from it ("ddp_fork": the DDP strategy and wrapper users get
from "ddp", without a second interpreter's start-up; the console-script runs in test_multi_device.py use "ddp").

Usage: python tests/callbacks/ddp_unfreeze.py OUT_DIR [--no-rebuild]
Each rank saves its initial and final weights to OUT_DIR/rank<r>.pt.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests._rank_weights import SaveRankWeights  # noqa: E402
from tests.callbacks._helpers import loaders, model, trainer  # noqa: E402
from tlkit.callbacks import (  # noqa: E402
    LRWarmup,
    ProgressiveUnfreezing,
    progressive_unfreezing,  # noqa: E402
)


def main(out_dir: Path, rebuild: bool) -> None:
    if not rebuild:
        # Shows what the rebuild prevents: DDP keeps reducing only what was trainable when it wrapped the model.
        progressive_unfreezing.rebuild_ddp_wrapper = lambda trainer: False
    net = model()
    train, val = loaders(n=64)
    callbacks = [ProgressiveUnfreezing(every_n_epochs=1, groups_per_step=2), LRWarmup(duration=4)]
    callbacks.append(SaveRankWeights(str(out_dir)))
    fit = trainer(out_dir, callbacks, max_epochs=3, devices=2, strategy="ddp_fork", use_distributed_sampler=True)
    fit.fit(net, train, val)


if __name__ == "__main__":
    main(Path(sys.argv[1]), rebuild="--no-rebuild" not in sys.argv)
