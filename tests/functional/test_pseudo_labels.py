"""SHOT's centroid pseudo-labels and information-maximisation loss."""

import torch
import torch.nn.functional as F

from tlkit.functional import centroid_pseudo_labels, im_score, information_maximization_loss


def clusters(n_per_class: int = 30, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 5 * torch.eye(classes, 8)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + 0.3 * torch.randn(len(labels), 8, generator=g), labels


def test_centroid_labels_follow_the_clusters_where_the_classifier_errs():
    features, truth = clusters()
    logits = F.one_hot(truth, 3).float() * 3
    wrong = torch.arange(0, 90, 4)  # a quarter of the samples predicted (confidently) as the next class
    logits[wrong] = F.one_hot((truth[wrong] + 1) % 3, 3).float() * 3
    probabilities = logits.softmax(dim=1)
    assert (probabilities.argmax(1) == truth).float().mean() < 0.8
    assert torch.equal(centroid_pseudo_labels(features, probabilities), truth)


def test_classes_nobody_predicts_get_no_centroid():
    features, truth = clusters(classes=3)
    probabilities = torch.full((90, 4), 0.01)
    probabilities[torch.arange(90), truth] = 0.97  # class 3 is never predicted
    labels = centroid_pseudo_labels(features, probabilities, refinements=0)
    assert set(labels.tolist()) == {0, 1, 2}


def test_information_maximization_loss_is_minus_the_im_validator():
    logits = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    expected = -im_score(logits.softmax(dim=1))
    assert torch.allclose(information_maximization_loss(logits), expected, atol=1e-4)
    confident_diverse = 20 * torch.eye(5)
    collapsed = 20 * F.one_hot(torch.zeros(5, dtype=torch.long), 5).float()
    assert information_maximization_loss(confident_diverse) < information_maximization_loss(collapsed)
