"""Image transforms derived from a backbone's data config.

TrivialAugment and RandAugment are torchvision's v2 implementations: on PIL images they do the same operations as
v1's in about half the time (1.2 ms less per 224 px image on this CPU: `benchmarks/data_loading.py`)."""

from __future__ import annotations

from torchvision import transforms as T
from torchvision.transforms import v2

from tlkit.backbones import DataConfig


def resize_size(config: DataConfig) -> int:
    """The shorter side evaluation resizes to before centre-cropping ``image_size``."""
    return round(config.image_size / config.crop_pct)


def eval_transform(config: DataConfig) -> T.Compose:
    """Resize to ``image_size / crop_pct``, centre-crop ``image_size``, normalise with the backbone's mean/std."""
    interpolation = T.InterpolationMode(config.interpolation)
    return T.Compose(
        [
            T.Resize(resize_size(config), interpolation=interpolation),
            T.CenterCrop(config.image_size),
            T.ToTensor(),
            T.Normalize(config.mean, config.std),
        ]
    )


def train_transform(
    config: DataConfig, augment: bool = True, hflip: bool = True, min_crop_scale: float = 0.35
) -> T.Compose:
    """The small-data preset: random resized crop (keeping ``min_crop_scale`` of the area or more), horizontal flip,
    TrivialAugment. ``augment=False`` is eval's."""
    if not augment:
        return eval_transform(config)
    interpolation = T.InterpolationMode(config.interpolation)
    crop = T.RandomResizedCrop(config.image_size, scale=(min_crop_scale, 1.0), interpolation=interpolation)
    steps: list = [crop]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [v2.TrivialAugmentWide(interpolation=interpolation), T.ToTensor(), T.Normalize(config.mean, config.std)]
    return T.Compose(steps)


def weak_transform(config: DataConfig, hflip: bool = True) -> T.Compose:
    """FixMatch's weak view: a mild random resized crop (and flip)."""
    interpolation = T.InterpolationMode(config.interpolation)
    steps: list = [T.RandomResizedCrop(config.image_size, scale=(0.7, 1.0), interpolation=interpolation)]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(config.mean, config.std)])


def strong_transform(config: DataConfig, hflip: bool = True) -> T.Compose:
    """FixMatch's strong view: random resized crop (and flip), RandAugment, random erasing."""
    interpolation = T.InterpolationMode(config.interpolation)
    steps: list = [T.RandomResizedCrop(config.image_size, scale=(0.35, 1.0), interpolation=interpolation)]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [
        v2.RandAugment(num_ops=2, magnitude=10, interpolation=interpolation),
        T.ToTensor(),
        T.Normalize(config.mean, config.std),
        T.RandomErasing(p=0.5, scale=(0.02, 0.15)),
    ]
    return T.Compose(steps)
