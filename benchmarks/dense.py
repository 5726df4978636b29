"""Dense tasks on the bundled digit scenes (real MNIST digits on real photographs, one to three per image, at several
sizes): semantic segmentation and object detection, pretrained versus random init, and FeatureExtraction versus
FineTuning versus gradual unfreezing.

    python benchmarks/dense.py [--tasks segmentation detection] [--seeds 0 1 2] [--methods ...] [--num_images 600]
        [--epochs 20]

Recipes: the shipped configs. Segmentation (`configs/digit_scenes_segmentation.yaml`): EfficientNet-Lite0 with a
Semantic FPN decoder, 64 px scenes, 11 classes, cross-entropy plus 0.5 x Dice, AdamW lr 3e-3. Detection
(`configs/digit_scenes_detection.yaml`): EfficientNet-Lite0 with torchvision's FCOS head on a pyramid at strides 8-32,
96 px scenes, 10 classes, AdamW lr 1e-3, crops keep 70% of the scene or more. Both: a 0.75 learning-rate decay per
layer group, augmentation on, ``--epochs`` epochs. FeatureExtraction trains the decoder or head alone on the frozen
backbone; gradual unfreezing starts from it and unfreezes one group every 2 epochs from the top, each warmed up over
50 steps. Reported: the test split's mean IoU and pixel accuracy (segmentation) or COCO mAP@[.5:.95] and mAP@.5
(detection) at the end of training, training images per second (the whole fit, validation included, over the
training images seen) and inference images per second (batch 16, eval mode, no grad, decoding included, median of
5 passes over the test split). Goal: pretrained clearly above random init for both tasks. Writes
benchmarks/results/dense.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
from _common import machine, mean_std, parse_args, quiet_trainer, table, write_json

from tlkit.callbacks import LRWarmup, ProgressiveUnfreezing
from tlkit.datamodules import DigitScenesDataModule
from tlkit.strategies import FeatureExtraction, FineTuning
from tlkit.tasks import Detection, Segmentation

#: task -> (the data's targets, scene size, learning rate, smallest crop, the reported metrics)
TASKS = {
    "segmentation": ("masks", 64, 3e-3, 0.5, ("miou", "pixel_acc")),
    "detection": ("boxes", 96, 1e-3, 0.7, ("map", "map_50")),
}
#: method -> (strategy, ImageNet weights, gradual unfreezing)
METHODS = {
    "FineTuning, ImageNet weights": (FineTuning, True, False),
    "FineTuning, random init": (FineTuning, False, False),
    "FeatureExtraction (frozen backbone)": (FeatureExtraction, True, False),
    "gradual unfreezing + warm-up": (FineTuning, True, True),
}


def inference_rate(model: torch.nn.Module, data: DigitScenesDataModule) -> float:
    """Images per second of the model's predictions on the test split (eval mode, no grad, the task's decoding
    included): the median of 5 passes."""
    images = torch.cat([x for x, _ in data.test_dataloader()])
    model.eval()
    rates = []
    with torch.inference_mode():
        for _ in range(5):
            started = time.perf_counter()
            for start in range(0, len(images), 16):
                model.predict_step(images[start : start + 16], 0)
            rates.append(len(images) / (time.perf_counter() - started))
    return statistics.median(rates)


def run(task: str, method: str, seed: int, args: argparse.Namespace, root: str) -> dict[str, float]:
    strategy, pretrained, gradual = METHODS[method]
    targets, scene_size, lr, min_crop_scale, metrics = TASKS[task]
    L.seed_everything(seed, verbose=False)
    options = dict(
        weights="imagenet" if pretrained else None,
        task=Segmentation(dice_weight=0.5) if task == "segmentation" else Detection(),
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01),
    )
    if strategy is FeatureExtraction:
        model = FeatureExtraction("tf_efficientnet_lite0", **options)
    else:
        model = FineTuning("tf_efficientnet_lite0", lr_decay=0.75, **options)
    data = DigitScenesDataModule(
        targets=targets,
        num_images=args.num_images,
        scene_size=scene_size,
        min_crop_scale=min_crop_scale,
        batch_size=16,
        seed=seed,
        root=root,
    )
    callbacks = [ProgressiveUnfreezing(every_n_epochs=2), LRWarmup(duration=50)] if gradual else []
    trainer = quiet_trainer(max_epochs=args.epochs, callbacks=callbacks)
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - started
    seen = args.epochs * len(data.splits["train"].samples)
    result = trainer.test(model, datamodule=data, verbose=False)[0]
    return {
        **{name: float(result[f"test/{name}"]) for name in metrics},
        "fit_seconds": seconds,
        "train_images_per_second": seen / seconds,
        "inference_images_per_second": inference_rate(model, data),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--num_images", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=20)
    args = parse_args(
        parser,
        {
            "seeds": [0],
            "num_images": 40,
            "epochs": 1,
            "methods": ["FineTuning, ImageNet weights", "gradual unfreezing + warm-up"],
        },
    )
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as root:
        for task in args.tasks:
            for method in args.methods:
                runs.setdefault(task, {})[method] = [run(task, method, seed, args, root) for seed in args.seeds]
                print(f"{task}, {method}: {runs[task][method]}", flush=True)
    print(
        f"\nThe bundled digit scenes, {machine()}, seeds {args.seeds}, {args.num_images} scenes, {args.epochs} epochs"
    )
    for task, by_method in runs.items():
        metrics = TASKS[task][4]
        rows = [
            [
                method,
                *(mean_std([r[name] for r in results], 100) for name in metrics),
                f"{statistics.median(r['train_images_per_second'] for r in results):.1f}",
                f"{statistics.median(r['inference_images_per_second'] for r in results):.0f}",
                f"{statistics.median(r['fit_seconds'] for r in results):.0f}",
            ]
            for method, results in by_method.items()
        ]
        header = ["method", *(f"test {name} %" for name in metrics), "train img/s", "inference img/s", "fit s"]
        print(f"\n{task}\n")
        print(table(header, rows))
    settings = {"seeds": args.seeds, "num_images": args.num_images, "epochs": args.epochs}
    path = write_json("dense", {**settings, "runs": runs})
    print(f"\nWritten: {path}")


if __name__ == "__main__":
    main()
