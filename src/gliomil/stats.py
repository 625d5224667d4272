"""Did a change really help? Paired tests for two runs of the HGG (1) vs LGG (0) classifier on the same patients.

Every comparison is ``before -> after`` and every difference is ``after - before``, so a positive difference
means the change raised the quantity (better for AUC, recall and accuracy; worse for the Brier score).

- :func:`delong_test` / :func:`delong_auc_ci`: two correlated ROC AUCs, or one AUC's confidence interval.
- :func:`mcnemar_exact`: paired right/wrong decisions at a fixed threshold.
- :func:`paired_bootstrap_ci`: any per-run statistic, patient bootstrap stratified by grade.
- :func:`corrected_repeated_cv_ttest`: per-fold differences over repeated k-fold cross-validation.
- :func:`holm`, :func:`sign_agreement`, :func:`verdict`: several endpoints, several seeds, plain words.

Results are small frozen dataclasses of plain floats and ints (``dataclasses.asdict`` makes them JSON-ready).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# Floating-point noise on a variance of a difference that is zero in exact arithmetic (identical runs, or
# scores that are monotone transforms of each other) must not turn into a huge z.
_RELATIVE_VARIANCE_TOL = 1e-12


def _two_sided_quantile(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return float(sps.norm.ppf(0.5 + level / 2.0))


def z_test(difference: float, sd: float, level: float = 0.95) -> tuple[float, float, float, float]:
    """Two-sided normal test of ``difference`` with standard error ``sd`` > 0: (z, p, CI low, CI high)."""
    z = difference / sd
    half_width = _two_sided_quantile(level) * sd
    return float(z), float(2.0 * sps.norm.sf(abs(z))), difference - half_width, difference + half_width


def _binary_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (LGG) or 1 (HGG)")
    return labels.astype(int)


def _scores_like(scores, labels: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.shape != labels.shape:
        raise ValueError(f"{name} has shape {scores.shape}, labels have {labels.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return scores


# --------------------------------------------------------------------------------------------------------------
# DeLong
# --------------------------------------------------------------------------------------------------------------


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


def _delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _delong_covariance(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
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
    labels = _binary_labels(labels)
    scores = _scores_like(scores, labels, "scores")
    aucs, v10, v01 = _delong_components(labels, scores[None, :])
    auc = float(aucs[0])
    variance = float(_delong_covariance(v10, v01)[0, 0])
    half_width = _two_sided_quantile(level) * math.sqrt(max(variance, 0.0))
    return AucCI(
        auc=auc,
        variance=variance,
        ci_low=max(auc - half_width, 0.0),
        ci_high=min(auc + half_width, 1.0),
        level=level,
        n_positive=int(v10.shape[1]),
        n_negative=int(v01.shape[1]),
    )


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
    labels = _binary_labels(labels)
    scores = np.stack([_scores_like(before, labels, "before"), _scores_like(after, labels, "after")])
    aucs, v10, v01 = _delong_components(labels, scores)
    cov = _delong_covariance(v10, v01)
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


# --------------------------------------------------------------------------------------------------------------
# McNemar
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test. b: right before, wrong after; c: wrong before, right after."""

    b: int
    c: int
    n: int
    n_right_before: int
    n_right_after: int
    p: float


def mcnemar_exact(correct_before, correct_after) -> McNemarResult:
    """Exact McNemar test of paired right/wrong decisions on the same patients.

    correct_before, correct_after: (N,) bool, whether each patient was classified correctly by each run.
    Only the discordant patients carry information: p is the two-sided binomial test of b out of b + c at 1/2
    (``scipy.stats.binomtest``); with no discordant patient there is nothing to test and p = 1.
    Restrict the arrays to LGG (or HGG) patients to compare LGG (HGG) recall.
    """
    before = np.asarray(correct_before)
    after = np.asarray(correct_after)
    if before.ndim != 1 or before.shape != after.shape:
        raise ValueError(f"need two 1-D arrays of one length, got shapes {before.shape} and {after.shape}")
    if before.dtype != bool or after.dtype != bool:
        # 0/1 floats or probabilities passed by mistake would silently be read as right/wrong.
        raise ValueError("correct_before and correct_after must be boolean arrays")
    b = int(np.sum(before & ~after))
    c = int(np.sum(~before & after))
    p = 1.0 if b + c == 0 else float(sps.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(
        b=b, c=c, n=int(before.size), n_right_before=int(before.sum()), n_right_after=int(after.sum()), p=min(p, 1.0)
    )


# --------------------------------------------------------------------------------------------------------------
# Statistics for the bootstrap: (labels (N,), probabilities (N,)) -> float
# --------------------------------------------------------------------------------------------------------------
# Written in numpy rather than with sklearn's scorers because the bootstrap calls them thousands of times and
# sklearn's input validation dominates at this size; tests check they agree with sklearn. A patient is
# predicted HGG when probability >= threshold, as in gliomil.metrics. Use functools.partial for another
# threshold: partial(sensitivity, threshold=0.37).


def sensitivity(labels, probabilities, threshold: float = 0.5) -> float:
    """HGG recall: fraction of HGG (1) patients with probability >= threshold."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    return float(np.mean(probabilities[labels == 1] >= threshold))


def specificity(labels, probabilities, threshold: float = 0.5) -> float:
    """LGG recall: fraction of LGG (0) patients with probability < threshold."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    return float(np.mean(probabilities[labels == 0] < threshold))


def balanced_accuracy(labels, probabilities, threshold: float = 0.5) -> float:
    """Mean of HGG and LGG recall at the threshold."""
    return (sensitivity(labels, probabilities, threshold) + specificity(labels, probabilities, threshold)) / 2.0


def brier_score(labels, probabilities) -> float:
    """Mean squared error of the HGG probability (lower is better; equals sklearn's brier_score_loss)."""
    labels, probabilities = np.asarray(labels, dtype=float), np.asarray(probabilities, dtype=float)
    return float(np.mean((probabilities - labels) ** 2))


# --------------------------------------------------------------------------------------------------------------
# Paired stratified bootstrap
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """Observed ``statistic(after) - statistic(before)`` with its percentile bootstrap interval."""

    observed: float
    ci_low: float
    ci_high: float
    level: float
    n_resamples: int


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


def paired_bootstrap_ci(
    labels,
    before,
    after,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapResult:
    """Paired patient bootstrap of ``statistic(labels, after) - statistic(labels, before)``, stratified by grade.

    labels: (N,) 1 = HGG, 0 = LGG; before, after: (N,) probabilities of the two runs for the same patients;
    statistic(labels, probabilities) -> float, e.g. :func:`balanced_accuracy` or :func:`brier_score`.
    Each resample draws patients with replacement within each grade and uses the same patients for both runs,
    so the correlation between runs is kept and the class balance is fixed. Percentile interval at ``level``;
    deterministic for a given seed. Identical runs give observed 0 and CI [0, 0].

    ``scipy.stats.bootstrap(paired=True)`` is not used because it cannot stratify, and per-stratum calls are
    wrong for statistics that are not additive over strata (balanced accuracy, AUC).
    """
    labels = _binary_labels(labels)
    before = _scores_like(before, labels, "before")
    after = _scores_like(after, labels, "after")
    _two_sided_quantile(level)  # validates level
    observed = float(statistic(labels, after) - statistic(labels, before))
    indices = stratified_bootstrap_indices(labels, n_resamples, seed)
    differences = np.array(
        [statistic(labels[idx], after[idx]) - statistic(labels[idx], before[idx]) for idx in indices], dtype=float
    )
    if not np.isfinite(differences).all():
        raise ValueError("the statistic was undefined (NaN or infinite) on some bootstrap resamples")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    return BootstrapResult(
        observed=observed, ci_low=float(low), ci_high=float(high), level=level, n_resamples=int(n_resamples)
    )


# --------------------------------------------------------------------------------------------------------------
# Corrected repeated k-fold cross-validation t-test
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorrectedTTestResult:
    """Corrected resampled t-test over repeated cross-validation; ``mean`` is the mean after - before."""

    mean: float
    variance: float
    t: float
    df: int
    p: float
    ci_low: float
    ci_high: float
    level: float
    n: int


def corrected_repeated_cv_ttest(differences, n_train: int, n_test: int, level: float = 0.95) -> CorrectedTTestResult:
    """Corrected repeated k-fold cross-validation t-test of paired differences (after - before).

    Nadeau & Bengio (2003), Machine Learning 52:239-281; Bouckaert & Frank (2004), PAKDD, LNCS 3056:3-12.
    differences: (k * r,) one after - before difference per fold of each of r repeats of k-fold CV (both runs
    on the same splits); n_train, n_test: patients in a fold's training and test sets.
    Folds share training patients, so their results are correlated and the plain t-test's variance s2 / n is
    too small; the correction replaces 1/n by 1/n + n_test/n_train:
    t = mean / sqrt((1/n + n_test/n_train) * s2), s2 with ddof=1, df = n - 1, two-sided p from Student's t,
    CI = mean +/- t_{df,(1+level)/2} * sqrt((1/n + n_test/n_train) * s2).
    Zero variance: all differences 0 gives t = 0, p = 1, CI [0, 0]; all equal and non-zero gives t = +/-inf,
    p = 0 and CI [mean, mean] (every fold agrees exactly; in practice a sign of a degenerate comparison).
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"need a 1-D array of at least 2 differences, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("differences contain NaN or infinite values")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    n = int(d.size)
    # Equal differences have zero variance exactly; mean() and var() of them can be off by rounding.
    constant = bool(np.all(d == d[0]))
    mean = float(d[0]) if constant else float(d.mean())
    variance = 0.0 if constant else float(d.var(ddof=1))
    df = n - 1
    se = math.sqrt((1.0 / n + n_test / n_train) * variance)
    if se == 0.0:
        if mean == 0.0:
            t, p = 0.0, 1.0
        else:
            t, p = math.copysign(math.inf, mean), 0.0
    else:
        t = mean / se
        p = float(2.0 * sps.t.sf(abs(t), df))
    _two_sided_quantile(level)
    half_width = float(sps.t.ppf(0.5 + level / 2.0, df)) * se
    return CorrectedTTestResult(
        mean=mean,
        variance=variance,
        t=float(t),
        df=df,
        p=p,
        ci_low=mean - half_width,
        ci_high=mean + half_width,
        level=level,
        n=n,
    )


# --------------------------------------------------------------------------------------------------------------
# Several endpoints, several seeds, plain words
# --------------------------------------------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (0-based) of m is multiplied by m - i; a running maximum keeps them
    monotone and they are capped at 1. Reject an endpoint when its adjusted p < alpha (family-wise error alpha).
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}")
    if p.size == 0:
        return []
    if not ((p >= 0.0) & (p <= 1.0)).all():
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(a) for a in adjusted]


@dataclass(frozen=True)
class SignAgreement:
    """How many per-seed deltas (after - before) are positive, negative and exactly zero."""

    positive: int
    negative: int
    zero: int
    n: int


def sign_agreement(deltas) -> SignAgreement:
    """Count the signs of r per-seed deltas, e.g. 'AUC rose for 4 of 5 seeds'."""
    d = np.asarray(deltas, dtype=float)
    if d.ndim != 1 or np.isnan(d).any():
        raise ValueError("deltas must be a 1-D array without NaN")
    return SignAgreement(
        positive=int((d > 0).sum()), negative=int((d < 0).sum()), zero=int((d == 0).sum()), n=int(d.size)
    )


def _format_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def p_text(test: str, p: float, p_adjusted: float | None) -> str:
    """'McNemar p = 0.04, Holm-adjusted 0.12'; an empty test name gives 'p = 0.04'."""
    p_part = "p < 0.001" if p < 0.001 else f"p = {_format_p(p)}"
    text = f"{test} {p_part}".strip()
    if p_adjusted is not None:
        text += f", Holm-adjusted {_format_p(p_adjusted)}"
    return text


def _direction(raised: bool, higher_is_better: bool) -> str:
    return "improved" if raised == higher_is_better else "worsened"


def verdict(
    result,
    endpoint: str | None = None,
    p_adjusted: float | None = None,
    alpha: float = 0.05,
    higher_is_better: bool = True,
    difference_label: str | None = None,
) -> str:
    """Plain-words summary of a before -> after comparison.

        result: a DeLongResult, McNemarResult, CorrectedTTestResult or BootstrapResult. endpoint names the quantity
        ("LGG recall"); defaults: "AUC" (DeLong, whose null reads "no evidence of a difference in ranking"),
        "accuracy" (McNemar), "score" (others). The decision uses ``p_adjusted`` (Holm, over the family of endpoints)
        when given, else the raw p: "improved"/"worsened" only when it is < alpha, otherwise "no evidence of a
        difference in ...". A BootstrapResult has no p-value: it is decided by whether its interval excludes 0 (no
        multiplicity adjustment). higher_is_better=False for losses such as the Brier score. difference_label names
    the difference in the parentheses (default "d<endpoint>", e.g. "dAUC").
    """
    if isinstance(result, DeLongResult):
        name = endpoint or "AUC"
        detail = (
            f"{difference_label or 'd' + name} {result.difference:+.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}], "
            f"{p_text('', result.p, p_adjusted)}"
        )
        significant = (result.p if p_adjusted is None else p_adjusted) < alpha
        raised = result.difference > 0
        null_name = "ranking" if endpoint is None else name
    elif isinstance(result, McNemarResult):
        name = endpoint or "accuracy"
        counts = f"{result.n_right_before}/{result.n} -> {result.n_right_after}/{result.n}"
        significant = (result.p if p_adjusted is None else p_adjusted) < alpha
        raised = result.c > result.b
        p_words = p_text("McNemar", result.p, p_adjusted)
        if significant:
            return f"{name} {_direction(raised, higher_is_better)} {counts} ({p_words})"
        return f"no evidence of a difference in {name} ({counts}, {p_words})"
    elif isinstance(result, CorrectedTTestResult):
        name = endpoint or "score"
        detail = (
            f"mean {difference_label or 'd' + name} {result.mean:+.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}], "
            f"{p_text('corrected CV t-test', result.p, p_adjusted)}"
        )
        significant = (result.p if p_adjusted is None else p_adjusted) < alpha
        raised = result.mean > 0
        null_name = name
    elif isinstance(result, BootstrapResult):
        name = endpoint or "score"
        detail = (
            f"{difference_label or 'd' + name} {result.observed:+.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}], "
            f"{result.level:.0%} bootstrap CI"
        )
        significant = result.ci_low > 0 or result.ci_high < 0
        raised = result.ci_low > 0
        null_name = name
    else:
        raise TypeError(f"no verdict for a {type(result).__name__}")
    if significant:
        return f"{name} {_direction(raised, higher_is_better)} ({detail})"
    return f"no evidence of a difference in {null_name} ({detail})"
