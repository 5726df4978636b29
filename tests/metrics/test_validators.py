"""The label-free validators as Metrics: equal to their pure functions, capped, and synchronised across DDP ranks."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tlkit.functional import bnm_score, class_ami_score, im_score, image_thumbnails, pixel_ami_score, snd_score
from tlkit.metrics import (
    BatchNuclearNorm,
    ClassClusterAgreement,
    ImageClusterAgreement,
    InformationMaximization,
    SoftNeighborhoodDensity,
)

PAIRS = [(InformationMaximization, im_score), (SoftNeighborhoodDensity, snd_score), (BatchNuclearNorm, bnm_score)]


def probabilities(n: int, classes: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, classes, generator=torch.Generator().manual_seed(seed)).softmax(dim=1)


def features(n: int, seed: int = 0) -> torch.Tensor:
    """Features that partly follow ``probabilities``' argmax (so ClassAMI is neither 0 nor 1)."""
    p = probabilities(n, seed=seed)
    return p * 10 + torch.randn(n, 5, generator=torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize(("metric", "function"), PAIRS, ids=[m.__name__ for m, _ in PAIRS])
def test_metric_equals_its_function_over_batches_and_caps_its_samples(metric, function):
    p = probabilities(40)
    validator = metric()
    for batch in p.split(16):
        validator.update(batch)
    assert torch.allclose(validator.compute(), function(p))
    capped = metric(max_samples=10)
    for batch in p.split(16):
        capped.update(batch)
    assert sum(len(rows) for rows in capped.probabilities) == 10  # the rest never scored: never kept
    assert torch.allclose(capped.compute(), function(p[:10]))


def test_class_cluster_agreement_equals_its_function_over_batches_caps_and_needs_features():
    p, f = probabilities(40), features(40)
    validator = ClassClusterAgreement()
    for batch, batch_features in zip(p.split(16), f.split(16)):
        validator.update(batch, features=batch_features)
    expected = class_ami_score(f, p)
    assert 0.05 < expected.item() < 0.99
    assert torch.allclose(validator.compute(), expected)
    capped = ClassClusterAgreement(max_samples=20)
    for batch, batch_features in zip(p.split(16), f.split(16)):
        capped.update(batch, features=batch_features)
    assert [len(rows) for rows in capped.features] == [len(rows) for rows in capped.probabilities] == [16, 4, 0]
    assert torch.allclose(capped.compute(), class_ami_score(f[:20], p[:20]))
    with pytest.raises(ValueError, match=r"features of shape \(40, dim\).*None"):
        ClassClusterAgreement().update(p)


def images(n: int, seed: int = 0) -> torch.Tensor:
    """32 x 32 images, each the pattern of ``probabilities``' argmax plus noise (so PixelAMI is neither 0 nor 1)."""
    generator = torch.Generator().manual_seed(seed + 2)
    patterns = torch.rand(5, 3, 32, 32, generator=generator)
    return patterns[probabilities(n, seed=seed).argmax(dim=1)] + torch.rand(n, 3, 32, 32, generator=generator)


def test_image_cluster_agreement_equals_its_function_on_thumbnails_over_batches_caps_and_needs_images():
    p, x = probabilities(40), images(40)
    validator = ImageClusterAgreement()
    for batch, batch_images in zip(p.split(16), x.split(16)):
        validator.update(batch, images=batch_images)
    expected = pixel_ami_score(image_thumbnails(x), p)
    assert 0.05 < expected.item() < 0.99
    assert torch.allclose(validator.compute(), expected)
    assert validator.thumbnails[0].shape == (16, 3 * 16 * 16)  # thumbnails kept, not the images
    capped = ImageClusterAgreement(max_samples=35)
    for batch, batch_images in zip(p.split(16), x.split(16)):
        capped.update(batch, images=batch_images)
    assert [len(rows) for rows in capped.thumbnails] == [16, 16, 3]
    assert torch.allclose(capped.compute(), pixel_ami_score(image_thumbnails(x[:35]), p[:35]))
    with pytest.raises(ValueError, match=r"images of shape \(40, channels, H, W\).*None"):
        ImageClusterAgreement().update(p)


def _rank(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    p = probabilities(30)
    shard = p[:14] if rank == 0 else p[14:]  # uneven shards: torchmetrics gathers them all
    scores = []
    for metric, _ in PAIRS:
        validator = metric()
        validator.update(shard)
        scores.append(validator.compute())
    f = features(30)
    for cap in (2048, 20):  # 20: rank 0's 14 rows and the first 6 of rank 1's, each rank keeping only its first 20
        agreement = ClassClusterAgreement(max_samples=cap)
        agreement.update(shard, features=f[:14] if rank == 0 else f[14:])
        scores.append(agreement.compute())
    x = images(30)
    pixels = ImageClusterAgreement()
    pixels.update(shard, images=x[:14] if rank == 0 else x[14:])
    scores.append(pixels.compute())
    capped = InformationMaximization(max_samples=20)
    for batch in shard.split(5):
        capped.update(batch)
    scores.append(capped.compute())
    results[rank] = torch.stack(scores)
    dist.destroy_process_group()


def test_metrics_synchronise_across_two_ddp_processes():
    init_file = os.path.join(tempfile.mkdtemp(), "init")
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(init_file, results), nprocs=2, join=True)
        results = dict(results)
    p = probabilities(30)
    f = features(30)
    expected = [*(function(p) for _, function in PAIRS), class_ami_score(f, p), class_ami_score(f[:20], p[:20])]
    expected = torch.stack([*expected, pixel_ami_score(image_thumbnails(images(30)), p), im_score(p[:20])])
    assert torch.allclose(results[0], expected, atol=1e-6) and torch.allclose(results[1], expected, atol=1e-6)
