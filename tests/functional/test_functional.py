"""Each loss and score against a straightforward loop-and-numpy reference implementation."""

import math

import numpy as np
import pytest
import torch

from tlkit.functional import (
    align_distribution,
    bnm_score,
    class_ami_score,
    consensus_agreement,
    coral_loss,
    entropy,
    grad_reverse,
    im_score,
    image_thumbnails,
    mcc_loss,
    mmd_loss,
    pixel_ami_score,
    snd_score,
    warm_start_lambda,
)

rng = np.random.default_rng(0)


def softmax(a, axis=1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_grad_reverse_flips_and_scales_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(3.0).expand(4, 3))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_warm_start_lambda(p):
    assert warm_start_lambda(p) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1)
    assert warm_start_lambda(p, max_value=0.5) == pytest.approx(0.5 * warm_start_lambda(p))


def reference_mmd(x, y, multipliers):
    pooled = np.concatenate([x, y])
    sigma2 = np.mean([np.sum((a - b) ** 2) for a in pooled for b in pooled])

    def k(a, b):
        d = np.sum((a - b) ** 2)
        return sum(np.exp(-d / (m * sigma2)) for m in multipliers)

    def mean_k(p, q):
        return np.mean([k(a, b) for a in p for b in q])

    return mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)


def test_mmd_matches_reference_and_vanishes_for_equal_samples():
    x, y = rng.normal(size=(6, 4)), rng.normal(loc=0.5, size=(5, 4))
    multipliers = (0.5, 1.0, 2.0)
    got = mmd_loss(torch.tensor(x), torch.tensor(y), multipliers).item()
    assert got == pytest.approx(reference_mmd(x, y, multipliers), rel=1e-6)
    assert abs(mmd_loss(torch.tensor(x), torch.tensor(x)).item()) < 1e-9


def test_coral_matches_reference():
    x, y = rng.normal(size=(8, 3)), rng.normal(scale=2.0, size=(7, 3))
    expected = np.sum((np.cov(x, rowvar=False) - np.cov(y, rowvar=False)) ** 2) / (4 * 3 * 3)
    assert coral_loss(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(expected, rel=1e-9)


def test_entropy_matches_reference():
    logits = rng.normal(size=(5, 4))
    p = softmax(logits)
    expected = [-sum(q * math.log(q) for q in row) for row in p]
    got = entropy(torch.tensor(logits), reduction="none")
    assert np.allclose(got.numpy(), expected)
    assert entropy(torch.tensor(logits)).item() == pytest.approx(np.mean(expected))


def test_mcc_matches_reference():
    logits = rng.normal(size=(6, 3)) * 3
    t = 2.5
    p = softmax(logits / t)
    h = np.array([-sum(q * math.log(q + 1e-5) for q in row) for row in p])
    w = 1 + np.exp(-h)
    w = len(p) * w / w.sum()
    confusion = np.zeros((3, 3))
    for i in range(len(p)):
        confusion += w[i] * np.outer(p[i], p[i])
    confusion /= confusion.sum(axis=1, keepdims=True)
    expected = (confusion.sum() - np.trace(confusion)) / 3
    assert mcc_loss(torch.tensor(logits), t).item() == pytest.approx(expected, rel=1e-6)


def test_im_matches_reference_and_prefers_confident_diverse_predictions():
    p = softmax(rng.normal(size=(10, 4)))
    mean = p.mean(axis=0)
    expected = -np.sum(mean * np.log(mean)) - np.mean([-np.sum(row * np.log(row)) for row in p])
    assert im_score(torch.tensor(p)).item() == pytest.approx(expected, rel=1e-6)
    confident_diverse = torch.eye(4).repeat(3, 1) * 0.97 + 0.01
    collapsed = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(12, 1)
    assert im_score(confident_diverse) > im_score(collapsed)


def test_snd_matches_reference():
    p = softmax(rng.normal(size=(7, 3)) * 2)
    x = p / np.linalg.norm(p, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(x)):
        sims = np.array([x[i] @ x[j] for j in range(len(x)) if j != i]) / 0.05
        q = softmax(sims[None])[0]
        total += -np.sum(q * np.log(q + 1e-12))
    assert snd_score(torch.tensor(p)).item() == pytest.approx(total / len(x), rel=1e-6)


def test_bnm_matches_reference():
    p = softmax(rng.normal(size=(9, 4)))
    expected = np.sum(np.linalg.svd(p, compute_uv=False)) / 9
    assert bnm_score(torch.tensor(p)).item() == pytest.approx(expected, rel=1e-9)


def clustered_features(n: int = 300, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features in ``classes`` well-separated clusters, and each row's cluster."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, 32, generator=generator) * 4
    return centres[labels] + torch.randn(n, 32, generator=generator), labels


def one_hot_probabilities(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, classes).float() * 0.9 + 0.1 / classes


def test_class_ami_is_one_when_predictions_follow_the_feature_clusters_and_zero_when_collapsed():
    from sklearn.metrics import adjusted_mutual_info_score

    features, labels = clustered_features()
    permuted = (labels + 2) % 5  # class names do not matter, only the partition
    assert class_ami_score(features, one_hot_probabilities(permuted, 5)).item() == pytest.approx(1.0)
    collapsed = one_hot_probabilities(torch.zeros_like(labels), 5)
    assert class_ami_score(features, collapsed).item() == pytest.approx(0.0, abs=1e-9)
    unrelated = one_hot_probabilities(torch.randperm(300, generator=torch.Generator().manual_seed(1)) % 5, 5)
    assert abs(class_ami_score(features, unrelated).item()) < 0.05
    # Confident predictions that merge two of the feature clusters (a collapse IM can reward) score lower.
    merged = labels.clone()
    merged[merged == 1] = 0
    merged_score = class_ami_score(features, one_hot_probabilities(merged, 5)).item()
    assert merged_score == pytest.approx(adjusted_mutual_info_score(labels.numpy(), merged.numpy()), abs=1e-6)
    assert merged_score < 0.95


def test_class_ami_against_more_clusters_than_classes_scores_a_class_drawn_in_two_looks():
    """``clusters``: images of one class in two looks (10 clusters of features, 5 classes); predictions that follow
    the classes score the AMI of the looks and the classes, above predictions that mix up one look of each class."""
    from sklearn.metrics import adjusted_mutual_info_score

    features, looks = clustered_features(n=400, classes=10, seed=4)
    classes = looks // 2
    score = class_ami_score(features, one_hot_probabilities(classes, 5), clusters=10).item()
    assert score == pytest.approx(adjusted_mutual_info_score(looks.numpy(), classes.numpy()), abs=1e-6)
    wrong = (classes + (looks % 2) * torch.randint(1, 5, looks.shape, generator=torch.Generator().manual_seed(0))) % 5
    assert class_ami_score(features, one_hot_probabilities(wrong, 5), clusters=10).item() < score - 0.2
    assert class_ami_score(features[:19], one_hot_probabilities(classes[:19], 5), clusters=10).item() == 0.0


def test_pixel_ami_scores_predictions_against_the_images_own_clusters_three_a_class():
    """Digits drawn in two styles each: predictions that follow the digits score the AMI of the images' clusters
    (6 looks over 2 classes, found by k-means on 16 x 16 thumbnails) and the classes; confident predictions that
    mix up one style score lower, whatever features a model would have learnt for them."""
    from sklearn.metrics import adjusted_mutual_info_score

    generator = torch.Generator().manual_seed(0)
    looks = torch.arange(240) % 6  # 2 classes x 3 styles
    patterns = torch.rand(6, 3, 8, 8, generator=generator).repeat_interleave(4, -1).repeat_interleave(4, -2)
    images = patterns[looks] + 0.05 * torch.rand(240, 3, 32, 32, generator=generator)
    thumbnails = image_thumbnails(images)
    assert thumbnails.shape == (240, 3 * 16 * 16)
    classes = looks // 3
    score = pixel_ami_score(thumbnails, one_hot_probabilities(classes, 2)).item()
    assert score == pytest.approx(adjusted_mutual_info_score(looks.numpy(), classes.numpy()), abs=1e-6)
    mixed = torch.where(looks == 0, 1, classes)  # one style of class 0 read as class 1
    mixed_score = pixel_ami_score(thumbnails, one_hot_probabilities(mixed, 2)).item()
    assert mixed_score == pytest.approx(adjusted_mutual_info_score(looks.numpy(), mixed.numpy()), abs=1e-6)
    assert mixed_score < score - 0.03
    assert pixel_ami_score(thumbnails, one_hot_probabilities(torch.zeros_like(classes), 2)).item() == 0.0
    with pytest.raises(ValueError, match=r"images of shape \(N, channels, H, W\)"):
        image_thumbnails(images.flatten(1))


def test_class_ami_is_deterministic_and_zero_with_too_few_rows():
    features, labels = clustered_features(n=60, classes=5, seed=3)
    noisy = torch.randn(60, 5, generator=torch.Generator().manual_seed(2)).softmax(dim=1)
    assert class_ami_score(features, noisy).item() == class_ami_score(features, noisy).item()
    assert class_ami_score(features[:9], one_hot_probabilities(labels[:9], 5)).item() == 0.0  # < 2 rows per class


def test_align_distribution_matches_the_remixmatch_formula():
    torch.manual_seed(0)
    probabilities = torch.softmax(torch.randn(6, 4), dim=1)
    running_mean = torch.tensor([0.55, 0.25, 0.15, 0.05])
    expected = torch.empty_like(probabilities)
    for i, row in enumerate(probabilities):  # ReMixMatch: p * prior / running mean, renormalised (prior uniform)
        scaled = [float(row[k]) * 0.25 / float(running_mean[k]) for k in range(4)]
        expected[i] = torch.tensor([v / sum(scaled) for v in scaled])
    aligned = align_distribution(probabilities, running_mean)
    assert torch.allclose(aligned, expected, atol=1e-6)
    assert aligned[:, 0].mean() < probabilities[:, 0].mean()  # the over-predicted class loses mass
    assert torch.allclose(align_distribution(probabilities, torch.full((4,), 0.25)), probabilities, atol=1e-6)


def test_snd_of_a_single_sample_is_zero_not_nan():
    from tlkit.functional import snd_score

    assert snd_score(torch.tensor([[0.2, 0.8]])).item() == 0.0
    assert torch.isfinite(snd_score(torch.tensor([[0.2, 0.8], [0.6, 0.4]])))


def test_consensus_agreement_is_each_models_share_of_images_on_the_mean_predictions_class():
    # Three models on four images: two agree everywhere; the third predicts class 0 throughout, confidently.
    confident_zero = torch.tensor([[0.9, 0.05, 0.05]] * 4)
    first = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    second = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.2, 0.2, 0.6], [0.3, 0.6, 0.1]])
    assert consensus_agreement([confident_zero, first, second]) == pytest.approx([0.25, 1.0, 1.0])
    assert consensus_agreement([first]) == [1.0]  # one model agrees with itself
    assert consensus_agreement([first.half(), second.half()]) == pytest.approx([1.0, 1.0])  # as runs keep them
