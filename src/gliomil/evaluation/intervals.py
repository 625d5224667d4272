"""Confidence intervals the pipeline's stages report: one AUC's DeLong interval and the patient bootstrap.

- :func:`delong_auc_ci`: one ROC AUC with its DeLong variance and interval.
- :func:`stratified_bootstrap_indices`: resamples of patients within each grade, for any bootstrap interval.
- :func:`delong_components` / :func:`delong_covariance`: the mid-rank structural components, shared with the
  paired DeLong test of :mod:`gliomil.comparison.statistics`.

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
