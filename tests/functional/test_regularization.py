"""L2-SP and BSS penalties against their formulas."""

import numpy as np
import pytest
import torch

from tlkit.functional import batch_spectral_shrinkage, l2_penalty, l2_sp_distance


def test_l2_sp_is_zero_at_the_start_and_its_gradient_is_the_displacement():
    start = [torch.randn(3, 4), torch.randn(5)]
    weights = [w.clone().requires_grad_(True) for w in start]
    assert l2_sp_distance(weights, start).item() == 0.0
    with torch.no_grad():
        for w in weights:
            w.add_(torch.randn_like(w))
    distance = l2_sp_distance(weights, start)
    expected = 0.5 * sum(((w - w0) ** 2).sum() for w, w0 in zip(weights, start))
    torch.testing.assert_close(distance, expected)
    distance.backward()
    for w, w0 in zip(weights, start):
        torch.testing.assert_close(w.grad, (w - w0).detach())


def test_l2_penalty_is_half_the_squared_norm():
    weights = [torch.tensor([3.0, 4.0]), torch.tensor([[1.0]])]
    assert l2_penalty(weights).item() == pytest.approx(0.5 * (25 + 1))


@pytest.mark.parametrize(("n", "d", "k"), [(16, 8, 1), (16, 8, 3), (4, 10, 2), (4, 10, 9)])
def test_bss_is_the_sum_of_the_k_smallest_squared_singular_values(n, d, k):
    features = torch.randn(n, d, generator=torch.Generator().manual_seed(n + d + k))
    singular = np.linalg.svd(features.double().numpy(), compute_uv=False)
    expected = float((np.sort(singular)[: min(k, len(singular))] ** 2).sum())
    assert batch_spectral_shrinkage(features, k).item() == pytest.approx(expected, rel=1e-4)


def test_bss_gradient_shrinks_the_smallest_direction():
    features = torch.randn(32, 6, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    before = torch.linalg.svdvals(features.detach())
    batch_spectral_shrinkage(features, k=1).backward()
    after = torch.linalg.svdvals(features.detach() - 0.01 * features.grad)
    assert after[-1] < before[-1] and torch.allclose(after[:-1], before[:-1], atol=1e-5)
