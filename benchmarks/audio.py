"""Audio: who speaks and which language, on the recorded voices tlkit ships, with Resemblyzer's speaker encoder:
pretrained against random initialisation, the cached linear probe against fine-tuning; and which language, adapted
from synthetic voices to the recorded ones (SourceOnly, unsupervised domain adaptation, an oracle with the target's
labels).

    python benchmarks/audio.py [--seeds 0 1 2 3 4] [--tasks speaker language] [--adaptation_seeds 0 1 2]

The voices (`VoicesDataModule`): the numbers 0 to 20 from Asterisk's prompts, 84 clips; speaker (3 classes: Allison
in English and Spanish, June, Carlo) and language (4 classes: en, es, fr, it; Allison's English and Spanish clips
differ by language only). Each seed draws its own stratified split (30% of the clips tested). Test accuracy, mean and
standard deviation over seeds, and fit time.

Adaptation (`VoicesDomainDataModule`, task language): the labelled source is 420 clips of espeak-ng's synthetic voices
(5 voices, the same numbers in the same 4 languages), the target the 84 recorded clips, unlabelled (30% held out for
testing, stratified, per seed). Every method fine-tunes the whole encoder (AdamW 5e-3, the backbone at 0.1x) for 6
epochs of 20 steps; the adaptation methods train their first epoch source-only (their reference); SHOT adapts
SourceOnly's model of the same seed for 6 more epochs. The oracle is JointTraining with every target training label.
Writes benchmarks/results/audio.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from _common import machine, mean_std, parse_args, quiet_trainer, table, write_json

import tlkit.strategies
from tlkit.datamodules import VoicesDataModule, VoicesDomainDataModule
from tlkit.features import FeatureCache
from tlkit.strategies import FeatureExtraction, FineTuning

BACKBONE = "audio:resemblyzer"
METHODS = {
    # name: (strategy, weights, epochs)
    "linear probe, pretrained": ("probe", "imagenet", 40),
    "linear probe, random init": ("probe", None, 40),
    "fine-tuning, pretrained": ("finetune", "imagenet", 15),
    "fine-tuning, random init": ("finetune", None, 15),
}


#: name -> (strategy, target labels); synthetic voices to recorded ones, which language is spoken.
ADAPTATION = {
    "SourceOnly": ("SourceOnly", "none"),
    "DANN": ("DANN", "none"),
    "MCC": ("MCC", "none"),
    "SelfTraining": ("SelfTraining", "none"),
    "SHOT (from SourceOnly's model)": ("SHOT", "none"),
    "Oracle (JointTraining, target labels)": ("JointTraining", "all"),
}
ADAPTATION_EPOCHS = 6


def adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def model(strategy: str, weights: str | None, classes: int) -> L.LightningModule:
    if strategy == "probe":
        return FeatureExtraction(BACKBONE, weights=weights, num_classes=classes, optimizer=adamw(1e-2))
    # Pretrained: the top LSTM layer and the projection, as the shipped config; random init: every layer trains.
    groups = 2 if weights is not None else None
    return FineTuning(
        BACKBONE, weights=weights, num_classes=classes, trainable_groups=groups, lr_decay=0.5, optimizer=adamw(5e-3)
    )


def run(task: str, method: str, seed: int, epochs: int | None) -> dict:
    strategy, weights, recipe_epochs = METHODS[method]
    L.seed_everything(seed, verbose=False)
    FeatureCache.memory.clear()  # the probe pays for its features in every run
    # The probe reads clips whole (cached features); fine-tuning crops and varies their volume.
    augment = strategy != "probe"
    dm = VoicesDataModule(task=task, batch_size=16, val_fraction=0.15, test_fraction=0.3, seed=seed, augment=augment)
    dm.setup("fit")
    trainer = quiet_trainer(max_epochs=epochs or recipe_epochs, check_val_every_n_epoch=epochs or recipe_epochs)
    started = time.perf_counter()
    trainer.fit(model(strategy, weights, dm.num_classes), datamodule=dm)
    seconds = time.perf_counter() - started
    (result,) = trainer.test(trainer.lightning_module, datamodule=dm, verbose=False)
    return {"acc": result["test/acc"], "seconds": seconds, "test_clips": len(dm.splits["test"].labels)}


def adapt(method: str, seed: int, epochs: int, folder: Path) -> dict:
    """One method on one seed; SourceOnly saves its model in ``folder``, where SHOT (run after it) starts from."""
    strategy, target_labels = ADAPTATION[method]
    L.seed_everything(seed, verbose=False)
    dm = VoicesDomainDataModule(
        task="language", batch_size=16, seed=seed, target_labels=target_labels, iters_per_epoch=20
    )
    source_model = folder / f"source_only_{seed}.ckpt"
    if strategy == "SHOT":
        options = {"source_checkpoint": str(source_model)}
    elif strategy in ("SourceOnly", "JointTraining"):
        options = {}
    else:
        options = {"reference_epochs": 1}
    model = getattr(tlkit.strategies, strategy)(BACKBONE, optimizer=adamw(5e-3), **options)
    trainer = quiet_trainer(max_epochs=epochs)
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - started
    if strategy == "SourceOnly":
        trainer.save_checkpoint(source_model)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    return {"acc": result["test/acc"], "seconds": seconds, "test_clips": len(dm.splits["target_test"].labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--tasks", nargs="+", default=["speaker", "language"], choices=["speaker", "language"])
    parser.add_argument("--epochs", type=int, default=None, help="default: each method's recipe")
    parser.add_argument("--adaptation_seeds", type=int, nargs="*", default=[0, 1, 2])
    args = parse_args(parser, {"seeds": [0], "tasks": ["speaker"], "epochs": 1, "adaptation_seeds": [0]})
    results: dict[str, dict[str, list[dict]]] = {}
    for task in args.tasks:
        for method in METHODS:
            for seed in args.seeds:
                found = run(task, method, seed, args.epochs)
                results.setdefault(task, {}).setdefault(method, []).append(found)
                print(f"{task} / {method} / seed {seed}: {found}", flush=True)
    adaptation: dict[str, list[dict]] = {}
    models = Path(tempfile.mkdtemp(prefix="tlkit_audio_bench_"))
    for method in ADAPTATION:  # in order: SourceOnly before SHOT, which adapts its models
        for seed in args.adaptation_seeds:
            found = adapt(method, seed, args.epochs or ADAPTATION_EPOCHS, models)
            adaptation.setdefault(method, []).append(found)
            print(f"synthetic -> recorded / {method} / seed {seed}: {found}", flush=True)
    print(f"\nTest accuracy (%), mean ± std over seeds {args.seeds} ({machine()})\n")
    rows = []
    for task, methods in results.items():
        for method, runs in methods.items():
            accs = [r["acc"] for r in runs]
            seconds = statistics.median(r["seconds"] for r in runs)
            rows.append([task, method, mean_std(accs, 100), f"{seconds:.1f} s", str(runs[0]["test_clips"])])
    print(table(["task", "method", "test accuracy (%)", "fit time (median)", "test clips"], rows))
    if adaptation:
        print(
            f"\nSynthetic -> recorded voices, which language (target test accuracy, %), seeds {args.adaptation_seeds}\n"
        )
        rows = []
        for method, runs in adaptation.items():
            seconds = statistics.median(r["seconds"] for r in runs)
            rows.append(
                [method, mean_std([r["acc"] for r in runs], 100), f"{seconds:.1f} s", str(runs[0]["test_clips"])]
            )
        print(table(["method", "target test accuracy (%)", "fit time (median)", "test clips"], rows))
    document = {"seeds": args.seeds, "results": results}
    document["adaptation"] = {"seeds": args.adaptation_seeds, "results": adaptation}
    path = write_json("audio", document)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
