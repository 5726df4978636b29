"""Transferability scores: how well a pretrained model's features (or its source classifier) suit a labelled target
task, computed from one forward pass, before any training. Higher is better for all of them.

Inputs are float64 internally: the evidence and the covariance inverses lose digits in float32 on wide features.
"""

from __future__ import annotations

import math

import torch


def _as_labels(labels: torch.Tensor, num_classes: int | None) -> tuple[torch.Tensor, int]:
    labels = torch.as_tensor(labels).long().flatten()
    if labels.numel() == 0:
        raise ValueError("Expected at least one labelled sample, but got none.")
    return labels, int(num_classes if num_classes is not None else labels.max() + 1)


def logme_evidence(
    features: torch.Tensor, targets: torch.Tensor, max_iter: int = 100, tol: float = 1e-3
) -> tuple[float, float, float]:
    """Maximum log marginal evidence per sample of Bayesian linear regression ``t ~ N(F w, 1/beta)``,
    ``w ~ N(0, 1/alpha)``, with (alpha, beta) found by MacKay's fixed-point iteration (You et al., ICML 2021).

    Returns:
        (evidence / n, alpha, beta) at the fixed point.
    """
    f = features.double()
    t = targets.double().flatten()
    n, d = f.shape
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    sigma = s**2  # eigenvalues of F^T F (the non-zero ones; the rest add nothing to gamma or the fit)
    projected = u.T @ t  # t in the left singular basis
    residual_outside = (t @ t - projected @ projected).clamp_min(0.0)  # part of t no weight vector can reach
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        # Posterior mean in the singular basis: m_i = beta s_i (u_i . t) / (alpha + beta s_i^2).
        m = beta * s * projected / (alpha + beta * sigma)
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        m_norm = float(m @ m)
        fit = float(((s * m - projected) ** 2).sum() + residual_outside)  # ||F m - t||^2
        # With fewer samples than features the fit can be exact: gamma reaches n in floating point and beta would
        # be 0 (then log(0) and a division by zero); the smallest positive precisions keep the evidence finite.
        new_alpha = max(gamma / max(m_norm, 1e-300), 1e-300)
        new_beta = max((n - gamma) / max(fit, 1e-300), 1e-300)
        converged = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    m = beta * s * projected / (alpha + beta * sigma)
    m_norm = float(m @ m)
    fit = float(((s * m - projected) ** 2).sum() + residual_outside)
    # log|A| with A = alpha I_d + beta F^T F: the d - len(sigma) directions without data contribute log(alpha) each.
    log_det = float(torch.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * math.log(alpha)
    evidence = (
        n / 2 * math.log(beta)
        + d / 2 * math.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * fit
        - alpha / 2 * m_norm
        - log_det / 2
    )
    return evidence / n, alpha, beta


def logme(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """LogME (You et al., ICML 2021): the mean over classes of the per-sample log evidence of a Bayesian linear
    model predicting each class's one-hot column from the features. Needs no source classifier.

    Examples:
        >>> logme(torch.randn(100, 16), torch.randint(0, 4, (100,)))
    """
    labels, num_classes = _as_labels(labels, num_classes)
    evidences = [logme_evidence(features, (labels == k).double())[0] for k in range(num_classes)]
    return float(sum(evidences) / num_classes)


def logme_targets(features: torch.Tensor, targets: torch.Tensor, standardise: bool = False) -> float:
    """LogME over target columns (You et al., 2021): the mean per-sample log evidence of one Bayesian linear model
    per column of ``targets`` (N, K): each label's 0/1 column for label sets, each numeric target (``standardise``:
    scaled to zero mean and unit variance first, so targets in different units weigh alike) for regression."""
    columns = targets.double().reshape(len(targets), -1)
    if standardise:
        columns = (columns - columns.mean(dim=0)) / columns.std(dim=0).clamp_min(1e-12)
    evidences = [logme_evidence(features, columns[:, k])[0] for k in range(columns.shape[1])]
    return float(sum(evidences) / len(evidences))


def leep(source_probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """LEEP (Nguyen et al., ICML 2020): the mean log-likelihood of the target labels under the "dummy" classifier
    that maps the source classifier's predictions through the empirical conditional P(target | source class).

    Args:
        source_probabilities: (n, source classes) softmax outputs of the pretrained model's own classifier.
        labels: (n,) target labels.
    """
    labels, num_classes = _as_labels(labels, num_classes)
    theta = source_probabilities.double()
    n = len(labels)
    joint = torch.zeros(num_classes, theta.shape[1], dtype=torch.float64).index_add_(0, labels, theta) / n
    conditional = joint / joint.sum(dim=0, keepdim=True).clamp_min(1e-300)  # P(y | z)
    likelihood = (theta * conditional[labels]).sum(dim=1)  # sum_z P(y_i | z) theta_z(x_i)
    return float(torch.log(likelihood.clamp_min(1e-300)).mean())


def nce(source_labels: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """Negative conditional entropy -H(Y | Z) (Tran et al., ICCV 2019) of the target labels Y given the source
    classifier's hard predictions Z, from their empirical joint distribution."""
    labels, num_classes = _as_labels(labels, num_classes)
    source_labels = torch.as_tensor(source_labels).long().flatten()
    num_source = int(source_labels.max()) + 1
    joint = torch.zeros(num_classes, num_source, dtype=torch.float64)
    joint.index_put_((labels, source_labels), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    joint /= len(labels)
    marginal = joint.sum(dim=0, keepdim=True)
    present = joint > 0
    return float((joint[present] * torch.log(joint[present] / marginal.expand_as(joint)[present])).sum())


def ledoit_wolf_covariance(features: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The covariance of the rows of ``features`` shrunk towards a multiple of the identity by the Ledoit-Wolf
    coefficient (as scikit-learn's ``ledoit_wolf``), and the coefficient: well conditioned even with fewer samples
    than dimensions."""
    x = features.double()
    x = x - x.mean(dim=0, keepdim=True)
    n, d = x.shape
    empirical = x.T @ x / n
    mu = float(torch.trace(empirical)) / d
    squared = x**2
    beta_sum = float((squared.T @ squared).sum())
    delta_sum = float(((x.T @ x) ** 2).sum()) / n**2
    beta = (beta_sum / n - delta_sum) / (d * n)
    delta = (delta_sum - 2 * mu * float(squared.sum()) / n + d * mu**2) / d
    shrinkage = 0.0 if delta == 0 else min(beta, delta) / delta
    return (1 - shrinkage) * empirical + shrinkage * mu * torch.eye(d, dtype=torch.float64), shrinkage


def h_score(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, shrinkage: bool = True
) -> float:
    """H-score (Bao et al., ICIP 2019): ``tr(cov(f)^-1 cov(E[f | y]))``, how much of the features' variance the class
    means explain, whitened by the features' own covariance.

    With fewer samples than dimensions the empirical covariance is singular and the plain score saturates at
    ``classes - 1`` for any features; ``shrinkage`` (default) is Ibrahim et al.'s (ICLR 2023) estimate,
    ``tr(cov_a^-1 (1 - a) cov(E[f | y]))`` with the Ledoit-Wolf covariance ``cov_a`` and its coefficient ``a``.
    ``shrinkage=False`` is the original definition (with a pseudo-inverse).
    """
    labels, num_classes = _as_labels(labels, num_classes)
    f = features.double()
    f = f - f.mean(dim=0, keepdim=True)
    counts = torch.bincount(labels, minlength=num_classes).double()
    sums = torch.zeros(num_classes, f.shape[1], dtype=torch.float64).index_add_(0, labels, f)
    class_means = sums / counts.clamp_min(1.0)[:, None]
    g = class_means[labels]  # each sample replaced by its class's mean feature
    between = g.T @ g / len(f)
    if shrinkage:
        covariance, coefficient = ledoit_wolf_covariance(f)
        return float(torch.trace(torch.linalg.solve(covariance, (1 - coefficient) * between)))
    covariance = f.T @ f / len(f)
    return float(torch.trace(torch.linalg.pinv(covariance, hermitian=True) @ between))
