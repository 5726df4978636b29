"""Are the maps of `tlkit predict --explain` about the object, or noise? On the digit scenes (a real MNIST digit on
a real photograph, its pixels known), the share of each map's mass inside the box around the digit, for a digit
classifier fine-tuned from ImageNet weights and the same network from random init.

    python benchmarks/explanations.py [--seeds 0 1] [--epochs 15] [--scenes 600] [--scene-size 96]

One digit per scene, at its own place, size and colour; the model is `tf_efficientnet_lite0` fine-tuned to name it
(10 classes, AdamW at 3e-3, the same steps for both inits; 96 px, so that Grad-CAM reads a 3 x 3 last map). The
first `--explained` correctly classified test scenes are explained, each map for the predicted class (as `--explain`
does): on a wrongly classified scene the map is not about the digit. "Chance" is the share of the image the digit's
box covers: a map spread evenly would score it. Prints a Markdown table and writes
benchmarks/results/explanations.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from functools import partial

import lightning as L
import numpy as np
import torch
from _common import machine, mean_std, parse_args, quiet_trainer, table, write_json
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from tlkit.datamodules import DigitScenesDataModule
from tlkit.datamodules.segmentation import read_mask
from tlkit.functional.attribution import activation_maps, mass_inside
from tlkit.strategies import FineTuning


def scene_tensors(scenes: DigitScenesDataModule, split: str, mean, std) -> tuple[torch.Tensor, ...]:
    """A split's scenes normalised, their digits (N,) and their masks (N, H, W; class d + 1 is digit d)."""
    _, splits = scenes.load_splits()
    images, labels, masks = [], [], []
    for path, mask_path in zip(splits[split].samples, splits[split].labels):
        pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)
        images.append((pixels - torch.tensor(mean)) / torch.tensor(std))
        mask = torch.from_numpy(read_mask(mask_path).astype(np.int64))
        masks.append(mask)
        labels.append(int(mask[(mask > 0) & (mask <= 10)].max()) - 1)  # the scene's one digit
    return torch.stack(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels), torch.stack(masks)


def fitted(weights: str | None, train: tuple[torch.Tensor, ...], epochs: int, seed: int) -> FineTuning:
    L.seed_everything(seed, verbose=False)
    optimizer = partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.01)
    model = FineTuning("tf_efficientnet_lite0", weights=weights, num_classes=10, optimizer=optimizer)
    loader = DataLoader(TensorDataset(train[0], train[1]), batch_size=32, shuffle=True)
    quiet_trainer(max_epochs=epochs, limit_val_batches=0).fit(model, train_dataloaders=loader)
    return model.eval()


def digit_box(pixels: torch.Tensor) -> torch.Tensor:
    """The (H, W) box around a digit's pixels (all False when the digit is not on the scene)."""
    box = torch.zeros_like(pixels)
    if pixels.any():
        rows, columns = pixels.any(dim=1).nonzero()[:, 0], pixels.any(dim=0).nonzero()[:, 0]
        box[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1] = True
    return box


def evaluate(model: FineTuning, test: tuple[torch.Tensor, ...], method: str, most: int) -> dict[str, float]:
    """The maps of the first ``most`` correctly classified test scenes, scored against their digits' boxes."""
    images, labels, masks = test
    with torch.no_grad():
        targets = torch.cat([model(images[i : i + 64]).argmax(dim=1) for i in range(0, len(images), 64)])
    correct = targets == labels
    accuracy = float(correct.float().mean())
    chosen = correct.nonzero()[:most, 0]
    if len(chosen) == 0:  # nothing named right: nothing to explain
        return {"inside": float("nan"), "chance": float("nan"), "explained": 0, "accuracy": accuracy}
    images, targets, masks = images[chosen], targets[chosen], masks[chosen]
    present = torch.ones(len(chosen), dtype=torch.bool)
    objects = torch.stack([digit_box(mask == target + 1) for mask, target in zip(masks, targets.tolist())])
    maps = torch.cat([activation_maps(model, images[i : i + 16], targets[i : i + 16], method)
                      for i in range(0, len(images), 16)])  # fmt: skip
    inside = mass_inside(maps, objects.float())[present]
    chance = objects.flatten(1).float().mean(dim=1)[present]
    return {
        "inside": float(inside.mean()),
        "chance": float(chance.mean()),
        "explained": int(present.sum()),
        "accuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--scenes", type=int, default=600)
    parser.add_argument("--scene-size", type=int, default=96)
    parser.add_argument("--methods", nargs="+", default=["gradcam", "occlusion"])
    parser.add_argument("--explained", type=int, default=40, help="correctly classified test scenes explained")
    args = parse_args(parser, {"seeds": [0], "epochs": 1, "scenes": 20, "scene_size": 32, "methods": ["gradcam"]})
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        scenes = DigitScenesDataModule(num_images=args.scenes, scene_size=args.scene_size, max_digits=1, root=folder)
        probe = FineTuning("tf_efficientnet_lite0", weights=None, num_classes=10)
        mean, std = probe.backbone.data_config.mean, probe.backbone.data_config.std
        train, test = (scene_tensors(scenes, split, mean, std) for split in ("train", "test"))
        for seed in args.seeds:
            for init, weights in (("ImageNet", "imagenet"), ("random init", None)):
                model = fitted(weights, train, args.epochs, seed)
                for method in args.methods:
                    measured = evaluate(model, test, method, args.explained)
                    results.append({"seed": seed, "init": init, "method": method, **measured})
                    print(f"seed {seed} {init} {method}: {measured}")
    rows = []
    for method in args.methods:
        for init in ("ImageNet", "random init"):
            mine = [r for r in results if r["method"] == method and r["init"] == init]
            inside, chance = [r["inside"] for r in mine], [r["chance"] for r in mine]
            rows.append([method, init, mean_std(inside, 100), mean_std(chance, 100),
                         f"{statistics.mean(inside) / statistics.mean(chance):.1f}x",
                         mean_std([r["accuracy"] for r in mine], 100)])  # fmt: skip
    header = ["method", "init", "map mass in the digit's box (%)", "chance (%)", "vs chance"]
    header.append("test accuracy (%)")
    print(table(header, rows))
    setting = f"{args.scenes} scenes ({args.scene_size} px), {args.epochs} epochs, seeds {args.seeds}"
    print(f"\nMachine: {machine()}; {setting}")
    print(f"Wrote {write_json('explanations', {'epochs': args.epochs, 'scenes': args.scenes, 'results': results})}")


if __name__ == "__main__":
    main()
