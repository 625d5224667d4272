"""Confidence intervals the pipeline's stages report: one AUC's DeLong interval and the patient bootstrap.

- :func:`delong_auc_ci`: one ROC AUC with its DeLong variance and interval.
- :func:`stratified_bootstrap_indices`: resamples of patients within each grade, for any bootstrap interval.
- :func:`delong_test`: two correlated AUCs on the same patients (a model against a baseline in the aggregate stage,
  two runs in :mod:`gliomil.comparison.compare`).
- :func:`delong_components` / :func:`delong_covariance`: the mid-rank structural components of both.
- :func:`format_p`: a p-value as every report prints it.

Labels are 1 = HGG (positive), 0 = LGG throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


def two_sided_quantile(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return float(sps.norm.ppf(0.5 + level / 2.0))


def binary_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (LGG) or 1 (HGG)")
    return labels.astype(int)


def scores_like(scores, labels: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.shape != labels.shape:
        raise ValueError(f"{name} has shape {scores.shape}, labels have {labels.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return scores


@dataclass(frozen=True)
class AucCI:
    """One AUC with its DeLong variance and confidence interval (clipped to [0, 1])."""

    auc: float
    variance: float
    ci_low: float
    ci_high: float
    level: float
    n_positive: int
    n_negative: int


def delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong structural components of ``k`` score vectors, by the mid-rank method of Sun & Xu (2014).

    labels: (N,) 0/1; scores: (k, N). Returns aucs (k,), v10 (k, m) over the m positives and v01 (k, n) over
    the n negatives. v10[i] is the fraction of negatives scored below positive i and v01[j] the fraction of
    positives scored above negative j, ties counting one half. Mid-ranks give these in O(N log N) instead of
    comparing all m * n pairs: the rank of positive i among all N scores minus its rank among the positives
    is the number of negatives below it (ties halved).
    """
    positive = labels == 1
    x, y = scores[:, positive], scores[:, ~positive]
    m, n = x.shape[1], y.shape[1]
    if m < 2 or n < 2:
        # The DeLong variance uses m - 1 and n - 1 denominators.
        raise ValueError(f"DeLong needs at least 2 HGG and 2 LGG patients, got {m} and {n}")
    rank_x = sps.rankdata(x, method="average", axis=1)
    rank_y = sps.rankdata(y, method="average", axis=1)
    rank_all = sps.rankdata(np.concatenate([x, y], axis=1), method="average", axis=1)
    aucs = (rank_all[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (rank_all[:, :m] - rank_x) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_y) / m
    return aucs, v10, v01


def delong_covariance(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    """(k, k) covariance of the k AUCs: S10 / m + S01 / n, sample covariances with n-1 denominators (as pROC)."""
    m, n = v10.shape[1], v01.shape[1]
    return np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n


def delong_auc_ci(labels, scores, level: float = 0.95) -> AucCI:
    """DeLong confidence interval of one ROC AUC.

    DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, computed with the fast mid-rank algorithm of
    Sun & Xu (2014), IEEE Signal Processing Letters 21(11):1389-1393.

    labels: (N,) 1 = HGG (positive), 0 = LGG; scores: (N,) higher = more likely HGG (any monotone scale).
    The interval is auc +/- z_{(1+level)/2} * sqrt(variance), clipped to [0, 1] because an AUC cannot leave it.
    """
    labels = binary_labels(labels)
    scores = scores_like(scores, labels, "scores")
    aucs, v10, v01 = delong_components(labels, scores[None, :])
    auc = float(aucs[0])
    variance = float(delong_covariance(v10, v01)[0, 0])
    half_width = two_sided_quantile(level) * math.sqrt(max(variance, 0.0))
    return AucCI(
        auc=auc,
        variance=variance,
        ci_low=max(auc - half_width, 0.0),
        ci_high=min(auc + half_width, 1.0),
        level=level,
        n_positive=int(v10.shape[1]),
        n_negative=int(v01.shape[1]),
    )


def stratified_bootstrap_indices(labels, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, N) patient indices, each row drawn with replacement within each grade.

    Every row holds exactly as many HGG and LGG patients as ``labels`` (grouped by grade, not in input order),
    so every resample has both classes and the class balance of the cohort.
    """
    labels = np.asarray(labels)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    blocks = []
    for grade in np.unique(labels):
        members = np.flatnonzero(labels == grade)
        blocks.append(members[rng.integers(0, members.size, size=(n_resamples, members.size))])
    return np.concatenate(blocks, axis=1)


# Floating-point noise on a variance of a difference that is zero in exact arithmetic (identical runs, or
# scores that are monotone transforms of each other) must not turn into a huge z.
_RELATIVE_VARIANCE_TOL = 1e-12


def z_test(difference: float, sd: float, level: float = 0.95) -> tuple[float, float, float, float]:
    """Two-sided normal test of ``difference`` with standard error ``sd`` > 0: (z, p, CI low, CI high)."""
    z = difference / sd
    half_width = two_sided_quantile(level) * sd
    return float(z), float(2.0 * sps.norm.sf(abs(z))), difference - half_width, difference + half_width


# --------------------------------------------------------------------------------------------------------------
# DeLong
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeLongResult:
    """DeLong test of two correlated AUCs on the same patients; ``difference = auc_after - auc_before``."""

    auc_before: float
    auc_after: float
    difference: float
    var_before: float
    var_after: float
    covariance: float
    sd_difference: float
    z: float
    p: float
    ci_low: float
    ci_high: float
    level: float
    n_positive: int
    n_negative: int


def delong_test(labels, before, after, level: float = 0.95) -> DeLongResult:
    """DeLong's test of two correlated ROC AUCs (two runs scored on the same patients).

    DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845; variance and covariance by the mid-rank
    algorithm of Sun & Xu (2014), IEEE Signal Processing Letters 21(11):1389-1393. Conventions follow pROC's
    ``roc.test(method="delong")``: ties count one half, n-1 denominators, z = d / sqrt(var_b + var_a - 2 cov),
    p = 2 * Phi(-|z|), CI = d +/- z_{(1+level)/2} * sd (not clipped).

    labels: (N,) 1 = HGG, 0 = LGG; before, after: (N,) scores of the two runs, higher = more likely HGG.
    ``difference = AUC(after) - AUC(before)``: positive means the change ranks patients better.
    When the two runs order the patients identically the difference has zero variance: z = 0, p = 1 and the CI
    is [d, d] (d = 0 up to rounding) instead of a division by zero.
    """
    labels = binary_labels(labels)
    scores = np.stack([scores_like(before, labels, "before"), scores_like(after, labels, "after")])
    aucs, v10, v01 = delong_components(labels, scores)
    cov = delong_covariance(v10, v01)
    var_before, var_after, covariance = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    difference = float(aucs[1] - aucs[0])
    var_difference = var_before + var_after - 2.0 * covariance
    if var_difference <= _RELATIVE_VARIANCE_TOL * (var_before + var_after):
        sd, z, p, ci_low, ci_high = 0.0, 0.0, 1.0, difference, difference
    else:
        sd = math.sqrt(var_difference)
        z, p, ci_low, ci_high = z_test(difference, sd, level)
    return DeLongResult(
        auc_before=float(aucs[0]),
        auc_after=float(aucs[1]),
        difference=difference,
        var_before=var_before,
        var_after=var_after,
        covariance=covariance,
        sd_difference=sd,
        z=float(z),
        p=p,
        ci_low=ci_low,
        ci_high=ci_high,
        level=level,
        n_positive=int(v10.shape[1]),
        n_negative=int(v01.shape[1]),
    )


def format_p(p: float | None, digits: int = 2) -> str:
    """A p-value as reports print it: ``digits`` significant digits, '< 0.001' below that, '–' for none."""
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.{digits}g}"
