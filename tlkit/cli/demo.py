"""`make demo`: ImageNet-pretrained versus random-init fine-tuning on 10 labelled digits per class, offline.

Both runs go through the `tlkit` command with configs/digits_finetune.yaml; only `model.weights` differs. Each is
tested on the held-out digits with its best checkpoint by validation accuracy.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tlkit.cli import LOG_DIR, TLKitCLI

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits_finetune.yaml"
RUNS = {"ImageNet-pretrained": "imagenet", "random init": "null"}


def run(weights: str, extra: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    cli = TLKitCLI(
        args=["--config", str(CONFIG), f"--model.init_args.weights={weights}", "--trainer.enable_progress_bar=false"]
        + extra,
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (result,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    return {
        "acc": result["test/acc"],
        "f1": result["test/f1"],
        "seconds": time.perf_counter() - started,
        "log_dir": cli.trainer.logger.log_dir,
        "test_size": len(cli.datamodule.splits["test"].labels),
    }


def main(extra: list[str] | None = None) -> dict[str, dict[str, float]]:
    if not CONFIG.is_file():
        sys.exit(f"tlkit demo: expected the config {CONFIG} (run the demo from a source checkout).")
    results = {label: run(weights, extra or []) for label, weights in RUNS.items()}
    test_size = next(iter(results.values()))["test_size"]
    print(f"\nFineTuning tf_efficientnet_lite0 on DigitsDataModule, 10 labelled images per class (test: {test_size})")
    print(f"| {'weights':<20} | test accuracy | macro-F1 | wall time |")
    print(f"|{'-' * 22}|---------------|----------|-----------|")
    for label, r in results.items():
        print(f"| {label:<20} | {r['acc']:>13.3f} | {r['f1']:>8.3f} | {r['seconds']:>7.0f} s |")
    for label, r in results.items():
        print(f"TensorBoard log ({label}): {r['log_dir']}")
    print(f"View them with: tensorboard --logdir {LOG_DIR}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
