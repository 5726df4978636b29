"""Transferability scores against independent references: scikit-learn's BayesianRidge evidence for LogME, and
direct computations from each definition for LEEP, NCE and H-score."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import BayesianRidge

from tlkit.functional import h_score, ledoit_wolf_covariance, leep, logme, logme_evidence, nce


def bayesian_ridge_evidence(features: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    """The same model as LogME's (no intercept, flat hyper-priors), fitted to its fixed point by scikit-learn."""
    model = BayesianRidge(
        max_iter=5000, tol=1e-12, alpha_1=0.0, alpha_2=0.0, lambda_1=0.0, lambda_2=0.0,
        fit_intercept=False, compute_score=True, alpha_init=1.0, lambda_init=1.0,
    )  # fmt: skip
    model.fit(features, target)
    return model.scores_[-1] / len(target), model.lambda_, model.alpha_


@pytest.mark.parametrize(("n", "d"), [(120, 8), (40, 64)], ids=["tall", "wide"])
def test_logme_evidence_equals_bayesian_ridge_at_its_fixed_point(n, d):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n, d, generator=generator, dtype=torch.float64)
    target = (features[:, 0] + 0.5 * torch.randn(n, generator=generator, dtype=torch.float64) > 0).double()
    ours, alpha, beta = logme_evidence(features, target, max_iter=5000, tol=1e-12)
    reference, ref_alpha, ref_beta = bayesian_ridge_evidence(features.numpy(), target.numpy())
    assert alpha == pytest.approx(ref_alpha, rel=1e-5) and beta == pytest.approx(ref_beta, rel=1e-5)
    assert ours == pytest.approx(reference, rel=1e-6, abs=1e-8)


def test_logme_prefers_features_that_separate_the_classes():
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(200) % 4
    informative = torch.nn.functional.one_hot(labels, 4).double() * 3 + torch.randn(200, 4, generator=generator)
    noise = torch.randn(200, 4, generator=generator, dtype=torch.float64)
    assert logme(informative, labels) > logme(noise, labels)
    per_class = [logme_evidence(informative, (labels == k).double())[0] for k in range(4)]
    assert logme(informative, labels) == pytest.approx(sum(per_class) / 4)


def test_leep_matches_its_definition_on_a_small_example():
    theta = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    labels = torch.tensor([0, 1, 0, 1])
    n = 4
    # P(y, z) = 1/n sum_i theta_iz [y_i = y]; P(y | z) = P(y, z) / sum_y P(y, z)
    # LEEP = mean_i log sum_z P(y_i | z) theta_iz
    joint = [[sum(theta[i, z].item() for i in range(n) if labels[i] == y) / n for z in range(3)] for y in range(2)]
    conditional = [[joint[y][z] / (joint[0][z] + joint[1][z]) for z in range(3)] for y in range(2)]
    expected = (
        sum(math.log(sum(conditional[labels[i]][z] * theta[i, z].item() for z in range(3))) for i in range(n)) / n
    )
    assert leep(theta, labels) == pytest.approx(expected, rel=1e-12)


def test_nce_is_minus_the_conditional_entropy_of_target_given_source_labels():
    source = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    # z=0: y in {0,0,1}; z=1: {1,1}; z=2: {0}. H(Y|Z) = 3/6 * H(2/3, 1/3) + 0 + 0.
    expected = -(3 / 6) * -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert nce(source, labels) == pytest.approx(expected, rel=1e-12)
    assert nce(labels, labels) == pytest.approx(0.0)  # source labels that determine the target: the maximum


def test_h_score_matches_its_definition():
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(50, 3, generator=generator, dtype=torch.float64)
    labels = torch.arange(50) % 5
    centred = features - features.mean(0)
    covariance = np.cov(centred.numpy().T, bias=True)
    means = np.stack([centred[labels == k].mean(0).numpy() for k in range(5)])[labels.numpy()]
    expected = np.trace(np.linalg.pinv(covariance) @ np.cov(means.T, bias=True))
    assert h_score(features, labels, shrinkage=False) == pytest.approx(expected, rel=1e-9)


def test_shrinkage_h_score_uses_ledoit_wolf_and_stays_informative_when_dimensions_exceed_samples():
    from sklearn.covariance import ledoit_wolf

    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(30) % 3
    noise = torch.randn(30, 60, generator=generator, dtype=torch.float64)
    covariance, coefficient = ledoit_wolf_covariance(noise)
    reference, reference_coefficient = ledoit_wolf(noise.numpy())
    assert torch.allclose(covariance, torch.from_numpy(reference)) and coefficient == pytest.approx(
        reference_coefficient
    )
    informative = noise.clone()
    informative[:, :3] += 4 * torch.nn.functional.one_hot(labels, 3)
    # The plain score saturates at classes - 1 for both; the shrunk one tells them apart.
    assert h_score(noise, labels, shrinkage=False) == pytest.approx(2.0, abs=1e-6)
    assert h_score(informative, labels, shrinkage=False) == pytest.approx(2.0, abs=1e-6)
    assert h_score(informative, labels) > 2 * h_score(noise, labels)


@pytest.mark.parametrize("score", [logme, h_score])
def test_scores_refuse_an_empty_label_set(score):
    with pytest.raises(ValueError, match="at least one labelled sample"):
        score(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
