"""Did a change really help? Paired tests for two runs of the HGG (1) vs LGG (0) classifier on the same patients.

Every comparison is ``before -> after`` and every difference is ``after - before``, so a positive difference
means the change raised the quantity (better for AUC, recall and accuracy; worse for the Brier score).

- two correlated ROC AUCs: :func:`gliomil.evaluation.intervals.delong_test` (a stage reports it too).
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

from gliomil.evaluation.intervals import (
    AucCI,
    DeLongResult,
    binary_labels,
    delong_auc_ci,
    format_p,
    scores_like,
    stratified_bootstrap_indices,
    two_sided_quantile,
    z_test,
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
# Runs on different patients (unpaired): pROC's unpaired DeLong test, Fisher's exact test
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnpairedAucTest:
    """Two independent AUCs: z = d / sqrt(var_before + var_after) with DeLong variances (pROC's unpaired test)."""

    before: AucCI
    after: AucCI
    difference: float
    sd_difference: float
    z: float
    p: float
    ci_low: float
    ci_high: float
    level: float


def unpaired_auc_test(labels_before, scores_before, labels_after, scores_after, level: float = 0.95) -> UnpairedAucTest:
    """z-test of two independent AUCs with DeLong variances: z = d / sqrt(v_before + v_after), two-sided p."""
    b = delong_auc_ci(labels_before, scores_before, level)
    a = delong_auc_ci(labels_after, scores_after, level)
    difference = a.auc - b.auc
    variance = b.variance + a.variance
    if variance <= 0.0:
        sd, z, p, ci_low, ci_high = 0.0, 0.0, 1.0 if difference == 0.0 else 0.0, difference, difference
    else:
        sd = math.sqrt(variance)
        z, p, ci_low, ci_high = z_test(difference, sd, level)
    return UnpairedAucTest(
        before=b,
        after=a,
        difference=difference,
        sd_difference=sd,
        z=float(z),
        p=p,
        ci_low=ci_low,
        ci_high=ci_high,
        level=level,
    )


@dataclass(frozen=True)
class ProportionTest:
    """Right decisions of two independent groups of patients: Fisher's exact test and the chi-square test."""

    right_before: int
    n_before: int
    right_after: int
    n_after: int
    difference: float
    fisher_p: float
    chi2_p: float


def proportion_test(right_before: int, n_before: int, right_after: int, n_after: int) -> ProportionTest:
    """Fisher's exact test and the chi-square test (Yates-corrected) of right/wrong counts of two groups."""
    if n_before < 1 or n_after < 1:
        raise ValueError(f"need patients in both runs, got {n_before} and {n_after}")
    table = np.array([[right_before, n_before - right_before], [right_after, n_after - right_after]])
    fisher_p = float(sps.fisher_exact(table).pvalue)
    if (table.sum(axis=0) == 0).any():  # everyone right (or wrong) in both runs: nothing to test
        chi2_p = 1.0
    else:
        chi2_p = float(sps.chi2_contingency(table, correction=True).pvalue)
    return ProportionTest(
        right_before=int(right_before),
        n_before=int(n_before),
        right_after=int(right_after),
        n_after=int(n_after),
        difference=right_after / n_after - right_before / n_before,
        fisher_p=min(fisher_p, 1.0),
        chi2_p=min(chi2_p, 1.0),
    )


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
    labels = binary_labels(labels)
    before = scores_like(before, labels, "before")
    after = scores_like(after, labels, "after")
    two_sided_quantile(level)  # validates level
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
    two_sided_quantile(level)
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


def p_text(test: str, p: float, p_adjusted: float | None) -> str:
    """'McNemar p = 0.04, Holm-adjusted 0.12'; an empty test name gives 'p = 0.04'."""
    p_part = "p < 0.001" if p < 0.001 else f"p = {format_p(p)}"
    text = f"{test} {p_part}".strip()
    if p_adjusted is not None:
        text += f", Holm-adjusted {format_p(p_adjusted)}"
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

    result: a DeLongResult, UnpairedAucTest, McNemarResult, CorrectedTTestResult or BootstrapResult. endpoint names
    the quantity ("LGG recall"); defaults: "AUC" (DeLong, whose null reads "no evidence of a difference in
    ranking"), "accuracy" (McNemar), "score" (others). The decision uses ``p_adjusted`` (Holm, over the family of
    endpoints) when given, else the raw p: "improved"/"worsened" only when it is < alpha, otherwise "no evidence of
    a difference in ...". A BootstrapResult has no p-value: it is decided by whether its interval excludes 0 (no
    multiplicity adjustment). higher_is_better=False for losses such as the Brier score. difference_label names the
    difference in the parentheses (default "d<endpoint>", e.g. "dAUC").
    """
    if isinstance(result, DeLongResult | UnpairedAucTest):  # unpaired (pROC): the paired test without covariance
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
