"""The label-free validators as Metrics: equal to their pure functions, capped, and synchronised across DDP ranks."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tlkit.functional import bnm_score, im_score, snd_score
from tlkit.metrics import BatchNuclearNorm, InformationMaximization, SoftNeighborhoodDensity

PAIRS = [(InformationMaximization, im_score), (SoftNeighborhoodDensity, snd_score), (BatchNuclearNorm, bnm_score)]


def probabilities(n: int, classes: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, classes, generator=torch.Generator().manual_seed(seed)).softmax(dim=1)


@pytest.mark.parametrize(("metric", "function"), PAIRS, ids=[m.__name__ for m, _ in PAIRS])
def test_metric_equals_its_function_over_batches_and_caps_its_samples(metric, function):
    p = probabilities(40)
    validator = metric()
    for batch in p.split(16):
        validator.update(batch)
    assert torch.allclose(validator.compute(), function(p))
    capped = metric(max_samples=10)
    capped.update(p)
    assert torch.allclose(capped.compute(), function(p[:10]))


def _rank(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    p = probabilities(30)
    shard = p[:14] if rank == 0 else p[14:]  # uneven shards: torchmetrics gathers them all
    scores = []
    for metric, _ in PAIRS:
        validator = metric()
        validator.update(shard)
        scores.append(validator.compute())
    results[rank] = torch.stack(scores)
    dist.destroy_process_group()


def test_metrics_synchronise_across_two_ddp_processes():
    init_file = os.path.join(tempfile.mkdtemp(), "init")
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(init_file, results), nprocs=2, join=True)
        results = dict(results)
    p = probabilities(30)
    expected = torch.stack([function(p) for _, function in PAIRS])
    assert torch.allclose(results[0], expected, atol=1e-6) and torch.allclose(results[1], expected, atol=1e-6)
