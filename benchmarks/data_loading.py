"""Training images per second that tlkit's loaders deliver on this CPU, beside timm's loader and a plain torchvision
pipeline on the same JPEGs, and how long setup takes as a folder grows.

Throughput: decoded and augmented 224 px training images per second (batch 32), after two warm-up batches, with 1 and
2 loader worker processes: tlkit's `ImageFolderDataModule` on a JPEG folder, `HuggingFaceImageDataModule` on the same
JPEGs as bytes in a Parquet file, `ShardsDataModule` on LitData shards of them; timm's `create_loader` (random resized
crop, flip, colour jitter) and torchvision's `ImageFolder` with transforms v2 (random resized crop, flip,
TrivialAugmentWide, normalise) on the folder. Per image, in one process: decode (PIL) and augmentation apart.

Setup: `ImageFolderDataModule.setup` on folders of 1k and 10k JPEGs: every file decoded at every setup (as tlkit did
before its image checks were kept), the first setup with the checks (decoded once, in threads), and a later one (the
remembered checks: a stat per file). Linear in files: per-file time x 1.28 M gives an ImageNet-sized folder.

    python benchmarks/data_loading.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, parse_args, table, write_json
from PIL import Image

#: NVIDIA's published ResNet-50 v1.5 training throughput on one A100 80GB, mixed precision (DeepLearningExamples,
#: PyTorch/Classification/ConvNets/resnet50v1.5, pytorch-21.03 NGC container): an H100 trains faster still, so the
#: cores it needs are at least these.
A100_RESNET50_AMP_IMAGES_PER_S = 2470


def write_jpegs(root: Path, count: int, size: tuple[int, int] = (400, 300), classes: int = 4) -> Path:
    """``count`` JPEGs (quality 90) cut from scikit-image's photos, in ``classes`` class folders."""
    from tlkit.datamodules.digits_m import bundled_photos

    photos = [Image.fromarray(photo).convert("RGB") for photo in bundled_photos()]
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        scale = rng.uniform(0.5, 1.0)
        w, h = int(width * scale), int(height * scale)
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        photo.crop((left, top, left + w, top + h)).resize(size).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def images_per_second(loader, batches: int, warmup: int = 2) -> float:
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        images = next(iterator)[0]
        seen += len(images)
    return seen / (time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ pipelines
def tlkit_folder(root: Path, workers: int, extra: dict):
    from tlkit.datamodules import ImageFolderDataModule

    dm = ImageFolderDataModule(str(root), batch_size=32, num_workers=workers, val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    return dm.train_dataloader()


def tlkit_folder_wide_crops(root: Path, workers: int, extra: dict):
    """tlkit's loader with crops from 8% of the area, as timm's and torchvision's: the loader's own cost apart from
    the preset's choice of crops (35% or more, so that small data keeps its objects)."""
    from tlkit.datamodules import ImageFolderDataModule

    dm = ImageFolderDataModule(
        str(root), batch_size=32, num_workers=workers, val_fraction=0.0, test_fraction=0.0, min_crop_scale=0.08
    )
    dm.setup("fit")
    return dm.train_dataloader()


def tlkit_parquet(root: Path, workers: int, extra: dict):
    from tlkit.datamodules import HuggingFaceImageDataModule

    dm = HuggingFaceImageDataModule(
        extra["parquet"], batch_size=32, num_workers=workers, val_fraction=0.0, test_fraction=0.0, verify_images=False
    )
    dm.setup("fit")
    return dm.train_dataloader()


def tlkit_shards(root: Path, workers: int, extra: dict):
    from tlkit.datamodules import ShardsDataModule

    dm = ShardsDataModule(extra["shards"], batch_size=32, num_workers=workers)
    dm.setup("fit")
    return dm.train_dataloader()


def timm_loader(root: Path, workers: int, extra: dict):
    from timm.data import ImageDataset, create_loader

    dataset = ImageDataset(str(root))
    return create_loader(
        dataset, input_size=(3, 224, 224), batch_size=32, is_training=True, num_workers=workers, use_prefetcher=False
    )


def torchvision_transform():
    """The plain torchvision pipeline compared with: random resized crop, flip, TrivialAugmentWide, normalise (v2)."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomResizedCrop(224),
            v2.RandomHorizontalFlip(),
            v2.TrivialAugmentWide(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )


def torchvision_v2(root: Path, workers: int, extra: dict):
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(root), transform=torchvision_transform())
    return DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers)


PIPELINES = {
    "tlkit, JPEG folder": tlkit_folder,
    "tlkit, JPEG folder, crops from 8%": tlkit_folder_wide_crops,
    "tlkit, Parquet (datasets)": tlkit_parquet,
    "tlkit, LitData shards": tlkit_shards,
    "timm create_loader": timm_loader,
    "torchvision ImageFolder + v2": torchvision_v2,
}


def decode_and_augment_ms(root: Path, images: int) -> dict[str, dict[str, float]]:
    """Per image, in this process: decode (PIL to RGB) and each pipeline's training transform, apart."""
    from tlkit.backbones import DataConfig
    from tlkit.datamodules import open_rgb
    from tlkit.datamodules.transforms import train_transform

    files = sorted(root.rglob("*.jpg"))[:images]
    started = time.perf_counter()
    decoded = [open_rgb(path) for path in files]
    decode = (time.perf_counter() - started) / len(files) * 1000
    transforms = {
        "tlkit preset (crop, flip, TrivialAugment)": train_transform(DataConfig(), True, True, 0.35),
        "torchvision v2 (crop, flip, TrivialAugmentWide)": torchvision_transform(),
    }
    result = {"decode (PIL, RGB)": {"ms": decode}}
    for name, transform in transforms.items():
        started = time.perf_counter()
        for image in decoded:
            transform(image)
        result[name] = {"ms": (time.perf_counter() - started) / len(decoded) * 1000}
    return result


# ------------------------------------------------------------------------------------------------- setup time
def setup_seconds(root: Path) -> dict[str, float]:
    from tlkit.datamodules import ImageFolderDataModule
    from tlkit.datamodules.image_checks import decode_problem

    files = sorted(root.rglob("*.jpg"))
    started = time.perf_counter()
    for path in files:  # what every setup did before the checks were kept: a full decode of every file
        decode_problem(path)
    every_time = time.perf_counter() - started
    before = os.environ.get("TLKIT_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TLKIT_CACHE_DIR"] = cache  # an empty cache: the first setup decodes every file
        try:
            started = time.perf_counter()
            ImageFolderDataModule(str(root)).setup("fit")
            first = time.perf_counter() - started
            started = time.perf_counter()
            ImageFolderDataModule(str(root)).setup("fit")
            later = time.perf_counter() - started
        finally:
            if before is None:
                del os.environ["TLKIT_CACHE_DIR"]
            else:
                os.environ["TLKIT_CACHE_DIR"] = before
    return {"files": len(files), "decode_every_setup_s": every_time, "first_setup_s": first, "later_setup_s": later}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800, help="JPEGs the loaders read")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per loader, after 2 warm-up ones")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--setup_sizes", type=int, nargs="+", default=[1000, 10000])
    args = parse_args(parser, {"images": 96, "batches": 1, "workers": [1], "repeats": 1, "setup_sizes": [40]})
    os.environ.setdefault("TLKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tlkit-bench-cache-"))
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        root = write_jpegs(work / "jpegs", args.images)
        extra = {"parquet": str(work / "jpegs.parquet"), "shards": str(work / "shards")}
        _write_parquet(root, Path(extra["parquet"]))
        from tlkit.datamodules import ImageFolderDataModule, write_shards

        write_shards(ImageFolderDataModule(str(root), val_fraction=0.0, test_fraction=0.0), extra["shards"])
        runs: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeats):  # interleaved: the machine's drift over minutes falls on every loader alike
            for name, build in PIPELINES.items():
                for workers in args.workers:
                    speed = images_per_second(build(root, workers, extra), args.batches)
                    runs.setdefault((name, workers), []).append(speed)
        throughput: dict[str, dict[str, float]] = {}
        for (name, workers), speeds in runs.items():
            throughput.setdefault(name, {})[str(workers)] = statistics.median(speeds)
        parts = decode_and_augment_ms(root, min(args.images, 200))
        setups = []
        for size in args.setup_sizes:
            folder = write_jpegs(work / f"setup{size}", size, size=(300, 225))
            setups.append(setup_seconds(folder))
    _report(args, throughput, parts, setups)


def _write_parquet(root: Path, path: Path) -> None:
    import datasets

    files = sorted(root.rglob("*.jpg"))
    names = sorted({p.parent.name for p in files})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    rows = {
        "image": [{"bytes": p.read_bytes(), "path": None} for p in files],
        "label": [names.index(p.parent.name) for p in files],
    }
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))


def _report(args, throughput, parts, setups) -> None:
    reference = throughput["timm create_loader"]
    header = ["loader", *[f"{w} worker{'s' if w > 1 else ''} (images/s)" for w in args.workers], "vs timm"]
    rows = []
    for name, by_workers in throughput.items():
        ratios = [by_workers[str(w)] / reference[str(w)] for w in args.workers]
        rows.append(
            [name, *[f"{by_workers[str(w)]:.0f}" for w in args.workers], " / ".join(f"{r:.2f}x" for r in ratios)]
        )
    print(f"\nTraining images per second, 224 px, batch 32, median of {args.repeats} ({machine()})\n")
    print(table(header, rows))
    best = max(throughput["tlkit, JPEG folder"].values()) / max(args.workers)
    cores = A100_RESNET50_AMP_IMAGES_PER_S / best
    print(
        f"\nPer worker process, tlkit's JPEG loader gives {best:.0f} images/s: feeding ResNet-50 at NVIDIA's published "
        f"{A100_RESNET50_AMP_IMAGES_PER_S} images/s (one A100, mixed precision; an H100 needs more) takes about "
        f"{cores:.0f} cores of this CPU."
    )
    print("\nPer image, in one process\n")
    print(table(["step", "ms"], [[name, f"{value['ms']:.2f}"] for name, value in parts.items()]))
    print("\nSetup of an ImageFolderDataModule (every image checked before training)\n")
    setup_rows = []
    for s in setups:
        per_file = {k: s[k] / s["files"] for k in ("decode_every_setup_s", "first_setup_s", "later_setup_s")}
        imagenet = {k: v * 1_281_167 / 60 for k, v in per_file.items()}
        setup_rows.append(
            [
                str(s["files"]),
                f"{s['decode_every_setup_s']:.2f} s",
                f"{s['first_setup_s']:.2f} s",
                f"{s['later_setup_s']:.2f} s",
                f"{imagenet['decode_every_setup_s']:.0f} / {imagenet['first_setup_s']:.0f} / "
                f"{imagenet['later_setup_s']:.1f} min",
            ]
        )
    header = ["files", "decode at every setup", "first setup (checks kept)", "later setups", "1.28 M files, linear"]
    print(table(header, setup_rows))
    payload = {"machine": machine(), "throughput": throughput, "per_image_ms": parts, "setup": setups}
    payload["cores_for_a100_resnet50"] = cores
    print(f"\nJSON: {write_json('data_loading', payload)}")


if __name__ == "__main__":
    main()
